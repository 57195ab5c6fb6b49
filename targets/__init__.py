"""Runtimes (LiteRT, ONNX Runtime, the Keras reference) and device target profiles.

Installed as `edgetl.targets`. The runtimes, profiles and the runner arrive with issue #5.
"""
