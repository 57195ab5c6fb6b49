"""MobileNetV2 from tf_keras.applications, without a classification top.

(MobileNetV3 is rebuilt from plain layers in mobilenet_v3.py: the application's TFOpLambda
hard-swish breaks TFMOT.)
"""

from __future__ import annotations

from typing import Any

from edgetl.tf_env import keras


def _shape(image_size: int) -> tuple[int, int, int]:
    return (image_size, image_size, 3)


def build_mobilenet_v2(image_size: int, alpha: float, weights: str | None) -> Any:
    return keras().applications.MobileNetV2(
        input_shape=_shape(image_size), alpha=alpha, include_top=False, weights=weights)
