"""Ground: the backbones and their ImageNet weights. The registry is here: adding a backbone is one builder
module plus one line in BACKBONES.

May import: edgetl.errors, edgetl.tf_env. Imports no stage and nothing else of the ground.
"""

from __future__ import annotations

import functools
from typing import Any

from edgetl.backbones import efficientnet_lite, mobilenet, mobilenet_v3
from edgetl.backbones.lite_architecture import EFFICIENTNET_LITE_PREPROCESSING
from edgetl.backbones.spec import MINUS_ONE_TO_ONE, BackboneSpec, Preprocessing
from edgetl.errors import UsageError

_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_V3_ALPHAS = (0.75, 1.0)

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("mobilenet_v2", mobilenet.build_mobilenet_v2, MINUS_ONE_TO_ONE, 224, _V2_ALPHAS,
                     description="MobileNetV2 (inverted residuals, ReLU6)"),
        BackboneSpec("mobilenet_v3_small", mobilenet_v3.build_mobilenet_v3_small, MINUS_ONE_TO_ONE, 224, _V3_ALPHAS,
                     description="MobileNetV3-Small, rebuilt QAT-safe (HardSwish layers, squeeze-excite)"),
        BackboneSpec("mobilenet_v3_large", mobilenet_v3.build_mobilenet_v3_large, MINUS_ONE_TO_ONE, 224, _V3_ALPHAS,
                     description="MobileNetV3-Large, rebuilt QAT-safe (HardSwish layers, squeeze-excite)"),
        BackboneSpec("mobilenet_v3_small_minimalistic", mobilenet_v3.build_mobilenet_v3_small_minimalistic,
                     MINUS_ONE_TO_ONE, 224, (1.0,), description="MobileNetV3-Small minimalistic "
                     "(no squeeze-excite, ReLU, 3x3 kernels; the edge variant)"),
        BackboneSpec("mobilenet_v3_large_minimalistic", mobilenet_v3.build_mobilenet_v3_large_minimalistic,
                     MINUS_ONE_TO_ONE, 224, (1.0,), description="MobileNetV3-Large minimalistic "
                     "(no squeeze-excite, ReLU, 3x3 kernels; the edge variant)"),
        *(BackboneSpec(f"efficientnet_lite{n}", functools.partial(efficientnet_lite.build_efficientnet_lite, n),
                       EFFICIENTNET_LITE_PREPROCESSING, size, (1.0,),
                       description=f"EfficientNet-Lite{n} (MBConv, ReLU6, no squeeze-excite)")
          for n, size in enumerate((224, 240, 260, 280, 300))),
    )
}


def imagenet_provenance(name: str) -> dict[str, Any]:
    """Where `--weights imagenet` comes from for backbone `name`, for the manifest (no weights are loaded)."""
    from edgetl.backbones import lite_imagenet
    from edgetl.backbones.checkpoints import official_checkpoint_dir

    if not name.startswith("efficientnet_lite"):
        return {"from": "keras.applications"}
    variant = int(name[-1])
    return lite_imagenet.provenance(variant) or {"from": "checkpoint", "path": str(official_checkpoint_dir(variant))}


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise UsageError(f"--backbone: unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None


__all__ = ["BACKBONES", "BackboneSpec", "Preprocessing", "get_backbone", "imagenet_provenance"]
