"""Quantization-aware training (TFMOT default 8-bit scheme, plus edgetl's HardSwish/HardSigmoid configs)."""

from __future__ import annotations

from typing import Any


def apply(model: Any) -> Any:
    """The fake-quantized, trainable copy of `model`; works for every registered backbone."""
    from edgetl.backbones.layers import quantize_model

    return quantize_model(model)


def strip(model: Any) -> Any:
    """A QAT model converts to int8 as it is: its fake-quant ranges are what the converter uses."""
    return model
