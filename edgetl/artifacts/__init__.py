"""Ground: what edgetl writes and reads back. Manifests with file hashes and lineage (`manifest`),
a training run directory and its images (`run_dir`), atomic staging of a new directory (`staging`),
locks (`locking`), training checkpoints for resuming (`resume`), and what is inside an exported
.tflite/.onnx file (`inspection`).

May import: the base modules (edgetl.errors, tf_env, progress), edgetl.data, edgetl.backbones,
edgetl.network, edgetl.converters (TFLite metadata reading). Imports no stage.
"""
