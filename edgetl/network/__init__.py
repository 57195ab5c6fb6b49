"""Ground: the Keras network edgetl trains and ships: a backbone from edgetl.backbones plus a head
(`heads`: linear, mlp, attention, prototype, siamese; the embedding of any model), built, loaded and cut
apart (`model`), the output structure of multi-task networks (`tasks`: one named output per task), and the
verification scorers, pair metrics and calibrated thresholds (`similarity`, numpy only).

May import: edgetl.errors, edgetl.tf_env, edgetl.progress, edgetl.backbones.
Imports no stage (training, compression, exporting, runner, bundling).
"""
