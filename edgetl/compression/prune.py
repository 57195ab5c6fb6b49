"""Magnitude pruning (TFMOT) of the layers that carry prunable kernels, with a polynomial schedule.

Structures: unstructured, `2:4` (two of every four consecutive input weights zero, the pattern
sparse tensor cores run) and `block` (whole blocks such as 1x4 zeroed together). Conv2D and Dense
kernels are pruned; depthwise kernels stay dense: they hold ~3 % of a MobileNet's weights, a 3x3
filter per channel has no redundancy to give, and pruning them cost the most accuracy per byte
saved (TFMOT's structured modes do not support them either).

Speed: pruning pays on disk (zeros compress) in every runtime. It pays in latency only where a
kernel skips zeros: XNNPACK's sparse path runs fp32/fp16 1x1 convolutions of NCHW-friendly models
when a file is converted with sparsity encoding and is >= 2/3 sparse, and TFMOT's
`PruneForLatencyOnXNNPack` policy targets it. That policy requires a ZeroPadding2D + VALID-padded
stem, which edgetl's backbones (SAME-padded stems, as the reference models) do not have; int8
XNNPACK kernels and ONNX Runtime's CPU provider have no sparse kernels. edgetl's reports therefore
show pruned and dense latency side by side rather than promise a speed-up.
"""

from __future__ import annotations

from typing import Any

from edgetl.compression import kernels
from edgetl.tf_env import keras

PRUNABLE = ("Conv2D", "Dense")
WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Dense")


def apply(model: Any, sparsity: float = 0.5, begin_step: int = 0, end_step: int = 100, structure: str = "none",
          block: tuple[int, int] = (1, 4)) -> Any:
    """Wrap the prunable layers with prune_low_magnitude; other layers are reused as they are."""
    import tensorflow_model_optimization as tfmot

    sparsity_api = tfmot.sparsity.keras
    # Masks update every `frequency` steps (TFMOT's default, 100, never fires in a short fine-tune);
    # the end step is a multiple of it, so the last update lands exactly on the final sparsity.
    frequency = max(1, (end_step - begin_step) // 20)
    end_step = begin_step + max(1, (end_step - begin_step) // frequency) * frequency
    schedule = sparsity_api.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity, begin_step=begin_step,
                                            end_step=end_step, frequency=frequency)
    extra: dict[str, Any] = {}
    if structure == "2:4":
        extra["sparsity_m_by_n"] = (2, 4)
    elif structure == "block":
        extra["block_size"] = block
    def wrap(layer: Any) -> Any:
        if type(layer).__name__ in PRUNABLE:
            return sparsity_api.prune_low_magnitude(layer, pruning_schedule=schedule, **extra)
        return layer  # reused as is: same object, same weights (as in the TFMOT guides)

    return keras().models.clone_model(model, clone_function=wrap)


def callbacks() -> list[Any]:
    """The callback pruning needs during fit (it advances the schedule)."""
    import tensorflow_model_optimization as tfmot

    return [tfmot.sparsity.keras.UpdatePruningStep()]


def strip(model: Any) -> Any:
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.strip_pruning(model)


def kernel_sparsity(model: Any, kinds: tuple[str, ...] = WEIGHTED) -> float:
    """The share of exact zeros over the kernels of `kinds` layers (biases excluded)."""
    import numpy as np

    found = kernels(model, kinds)
    total = sum(k.size for k in found)
    return sum(int(np.sum(k == 0)) for k in found) / total if total else 0.0

