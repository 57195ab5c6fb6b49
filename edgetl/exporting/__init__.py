"""Stage 3, `edgetl export`: one conversion of a run (or a compressed model) to a TFLite or ONNX file
through a converter of edgetl.converters, verified against the float model on validation images
before it is written (`exporter`), and the label files and metadata of multi-task runs (`tasks`).

May import: the ground, edgetl.runner (verification), edgetl.training (prototype refresh and the
did-it-learn cause of a failed verification).
"""
