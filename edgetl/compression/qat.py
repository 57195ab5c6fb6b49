"""Quantization-aware training (TFMOT 8-bit scheme, plus edgetl's HardSwish/HardSigmoid configs).

`preserve="prune"` (PQAT) keeps a pruned model's zeros; `preserve="cluster"` (CQAT) keeps its
clusters (TFMOT's collaborative-optimization schemes): QAT after pruning or clustering would
otherwise train them away.
"""

from __future__ import annotations

from typing import Any

PRESERVE = ("none", "prune", "cluster", "prune+cluster")


def apply(model: Any, preserve: str = "none") -> Any:
    """The fake-quantized, trainable copy of `model`; works for every registered backbone."""
    import tensorflow_model_optimization as tfmot

    from edgetl.backbones.layers import quantize_model

    combine = tfmot.experimental.combine
    scheme = {"none": None, "prune": combine.Default8BitPrunePreserveQuantizeScheme(),
              "cluster": combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False),
              "prune+cluster": combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)}[preserve]
    return quantize_model(model, scheme)


def strip(model: Any) -> Any:
    """A QAT model converts to int8 as it is: its fake-quant ranges are what the converter uses."""
    return model
