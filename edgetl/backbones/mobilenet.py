"""MobileNetV2 and MobileNetV3 from tf_keras.applications, without a classification top.

MobileNetV3's built-in Rescaling layer is left out (include_preprocessing=False): the data pipeline
normalizes to [-1, 1] instead, which keeps the graph free of layers TFMOT cannot quantize and gives
every backbone the same preprocessing contract.
"""

from __future__ import annotations

from typing import Any

from edgetl.tf_env import keras


def _shape(image_size: int) -> tuple[int, int, int]:
    return (image_size, image_size, 3)


def build_mobilenet_v2(image_size: int, alpha: float, weights: str | None) -> Any:
    return keras().applications.MobileNetV2(
        input_shape=_shape(image_size), alpha=alpha, include_top=False, weights=weights)


def build_mobilenet_v3_small(image_size: int, alpha: float, weights: str | None) -> Any:
    return keras().applications.MobileNetV3Small(
        input_shape=_shape(image_size), alpha=alpha, include_top=False, weights=weights,
        include_preprocessing=False)


def build_mobilenet_v3_large(image_size: int, alpha: float, weights: str | None) -> Any:
    return keras().applications.MobileNetV3Large(
        input_shape=_shape(image_size), alpha=alpha, include_top=False, weights=weights,
        include_preprocessing=False)
