"""Conversions from a trained run to deployable files (installed as `edgetl.converters`).

Adding a converter is one module with a class following `base.Converter`, plus one line here.
"""

from __future__ import annotations

import importlib

from edgetl.converters.base import Converter

CONVERTERS = {  # format -> "module:Class", imported on use so nothing heavy loads at start-up
    "tflite": "edgetl.converters.tflite:KerasToTFLite",
    "onnx": "edgetl.converters.onnx_export:KerasToONNX",
}


def get_converter(fmt: str) -> Converter:
    module, name = CONVERTERS[fmt].split(":")
    return getattr(importlib.import_module(module), name)()
