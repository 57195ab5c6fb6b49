"""BackboneSpec: how to build a backbone and what its input must look like."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The input contract: model_input = (rgb_pixel_0_255 - mean) / std, per channel.

    This is exactly TFLite metadata's NormalizationOptions, so exporters can copy it verbatim.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def input_range(self) -> tuple[float, float]:
        return ((0 - max(self.mean)) / min(self.std), (255 - min(self.mean)) / min(self.std))

    def to_json(self) -> dict[str, Any]:
        return {"color": "RGB", "pixel_range": [0, 255], "mean": list(self.mean), "std": list(self.std),
                "input_range": list(self.input_range)}


MINUS_ONE_TO_ONE = Preprocessing(mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5))


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone. `build(image_size, alpha, weights)` returns a flat tf_keras Model
    (input -> last feature map) whose layers the head is attached to; `weights` is "imagenet" or None.
    """

    name: str
    build: Callable[[int, float, str | None], Any]
    preprocessing: Preprocessing
    default_image_size: int
    imagenet_alphas: tuple[float, ...] = (1.0,)
    min_image_size: int = 32
    description: str = ""

    def to_json(self, image_size: int, alpha: float) -> dict[str, Any]:
        return {"name": self.name, "alpha": alpha, "image_size": image_size,
                "preprocessing": self.preprocessing.to_json()}
