"""Conversions from a trained run to deployable files (Keras->TFLite, Keras->ONNX, ONNX quantization).

Installed as `edgetl.converters`. The converters and their protocol arrive with issue #4.
"""
