"""The small runtime protocol: open a model file, feed normalized float images, get probabilities.

Quantized inputs and outputs are handled here, once, for every runtime: a float batch is quantized
with the input tensor's scale and zero point, and outputs are dequantized, so callers always compare
float probabilities.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import numpy as np


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | None, ...]
    dtype: str  # numpy dtype name
    scale: float = 0.0  # quantization; 0.0 when not quantized
    zero_point: int = 0


class Session(Protocol):
    runtime: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Normalized float32 NHWC batch -> float32 outputs of the first output tensor, one row per image."""

    def predict_all(self, images: np.ndarray) -> list[np.ndarray]:
        """Like predict, for every output tensor in output order (a multi-task model has one per task)."""

    def prepare(self, images: np.ndarray) -> Callable[[], None]:
        """Set `images` as the input once; return a call that runs one inference on it."""


def quantize(values: np.ndarray, info: TensorInfo) -> np.ndarray:
    if info.dtype in ("float32", "float16"):
        return values.astype(info.dtype)
    limits = np.iinfo(info.dtype)
    return np.clip(np.round(values / info.scale + info.zero_point), limits.min, limits.max).astype(info.dtype)


def dequantize(values: np.ndarray, info: TensorInfo) -> np.ndarray:
    if info.scale:
        return (values.astype(np.float32) - info.zero_point) * info.scale
    return values.astype(np.float32)
