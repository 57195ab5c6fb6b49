"""Precise BatchNorm statistics for backbones trained from scratch.

While BatchNorm trains, it normalizes with each batch's statistics but keeps exponential moving
averages (momentum 0.999 in the applications) for inference. On short schedules those averages
lag far behind the weights; through 50+ layers the error compounds until inference outputs are
nearly constant, and validation sits at chance while training accuracy climbs. Re-estimating the
statistics with the weights fixed (as pycls' "precise BN" does) closes that gap.
"""

from __future__ import annotations

from typing import Any, Iterable

from edgetl.tf_env import keras

MAX_BATCHES = 25


def trainable_batchnorm_layers(model: Any) -> list[Any]:
    return [layer for layer in model.layers
            if isinstance(layer, keras().layers.BatchNormalization) and layer.trainable]


def recalibrate(model: Any, batches: Iterable[Any], max_batches: int = MAX_BATCHES) -> int:
    """Replace the moving mean/variance of trainable BatchNorm layers by their average over batches.

    In training mode every layer normalizes with batch statistics, so one forward pass estimates
    all layers at once. Momentum k/(k+1) on the k-th batch makes the moving average an exact mean.
    Returns the number of batches used.
    """
    layers = trainable_batchnorm_layers(model)
    if not layers:
        return 0
    saved = [layer.momentum for layer in layers]
    used = 0
    try:
        for used, (images, _) in enumerate(batches, start=1):
            for layer in layers:
                layer.momentum = (used - 1) / used
            model(images, training=True)  # eager: each BatchNorm assigns its moving averages now
            if used >= max_batches:
                break
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return used
