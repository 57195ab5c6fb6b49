"""Ground: the Keras network edgetl trains and ships: a backbone from edgetl.backbones plus a head
(`heads`: linear, mlp, attention, prototype), built, loaded and cut apart (`model`), and the output
structure of multi-task networks (`tasks`: one named output per task).

May import: edgetl.errors, edgetl.tf_env, edgetl.progress, edgetl.backbones.
Imports no stage (training, compression, exporting, runner, bundling).
"""
