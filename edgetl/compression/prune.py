"""Magnitude pruning (TFMOT) of the layers that carry prunable kernels, with a polynomial schedule."""

from __future__ import annotations

from typing import Any

from edgetl.tf_env import keras

PRUNABLE = ("Conv2D", "DepthwiseConv2D", "Dense")


def apply(model: Any, sparsity: float = 0.5, begin_step: int = 0, end_step: int = 100) -> Any:
    """Wrap only Conv2D/DepthwiseConv2D/Dense layers with prune_low_magnitude."""
    import tensorflow_model_optimization as tfmot

    sparsity_api = tfmot.sparsity.keras
    schedule = sparsity_api.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity,
                                            begin_step=begin_step, end_step=end_step)

    def wrap(layer: Any) -> Any:
        if type(layer).__name__ in PRUNABLE:
            return sparsity_api.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer  # reused as is: same object, same weights (as in the TFMOT guides)

    return keras().models.clone_model(model, clone_function=wrap)


def callbacks() -> list[Any]:
    """The callback pruning needs during fit (it advances the schedule)."""
    import tensorflow_model_optimization as tfmot

    return [tfmot.sparsity.keras.UpdatePruningStep()]


def strip(model: Any) -> Any:
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.strip_pruning(model)
