"""Stage 1, `edgetl train`: a folder of images to a run directory. The validated options (`config`),
the run itself (`trainer`: data, model, phases, manifest), one training phase (`phases`), head-only
training on cached backbone features (`feature_cache`), regularizers, clipping and per-layer rates
(`constraints`), precise BatchNorm statistics (`batchnorm`), prototype heads and `edgetl enroll`
(`prototypes`), the siamese head's pairs and twin network (`siamese`), multi-task labels and metrics (`multitask`), multi-GPU and multi-worker training
(`distribute`, `tf_config`) and the did-it-learn check (`learning_check`).

May import: the ground (base modules, data, backbones, network, artifacts, converters, targets) and
edgetl.runner (the verification tolerances an enrolled prototype is checked with).
"""
