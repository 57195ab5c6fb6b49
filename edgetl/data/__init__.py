"""Ground: the user's images. Indexing a folder or CSV into a stratified split (`dataset_index`),
the checks that keep unreadable, truncated or oversized files out, and the tf.data pipelines that
decode, resize, augment and normalize them (`pipeline`).

May import: edgetl.errors, edgetl.tf_env, edgetl.progress, edgetl.backbones (the preprocessing contract).
Imports no stage (training, compression, exporting, runner, bundling).
"""
