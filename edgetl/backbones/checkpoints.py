"""Load the official EfficientNet-Lite ImageNet checkpoints (TF1, name-keyed) into efficientnet_lite's layers.

The release (tensorflow/tpu models/official/efficientnet/lite/README.md) ships one tarball per
variant, efficientnet-liteN.tar.gz, holding a TF1 checkpoint (model.ckpt.*) written by a tf.layers
model. Its variable names follow from how that model is called (efficientnet_model.py):

    efficientnet-liteN/stem/...        stem conv + BN
    efficientnet-liteN/blocks_K/...    the K-th MBConv block, counted over all groups from 0
    efficientnet-liteN/head/...        top conv + BN (and the classifier dense/, not used here)

Inside a scope, TF1 names each layer after its class and numbers repeats in call order: the first
Conv2D is conv2d, the second conv2d_1; DepthwiseConv2D gives depthwise_conv2d; BatchNormalization is
named tpu_batch_normalization (utils.BatchNormalization fixes that name). So a block with expansion
holds conv2d (expand), tpu_batch_normalization, depthwise_conv2d, tpu_batch_normalization_1,
conv2d_1 (project), tpu_batch_normalization_2; block 0 (no expansion) holds depthwise_conv2d,
tpu_batch_normalization, conv2d (project), tpu_batch_normalization_1. Variables are kernel,
depthwise_kernel and gamma/beta/moving_mean/moving_variance.

The checkpoint also stores each variable's exponential moving average under
`<name>/ExponentialMovingAverage`; the reference evaluates with those (EvalCkptDriver.restore_model,
enable_ema=True), so they are preferred here when present.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from edgetl.errors import InputError
from edgetl.tf_env import keras, tf

OFFICIAL_CHECKPOINT_URL = ("https://storage.googleapis.com/cloud-tpu-checkpoints/efficientnet/lite/"
                           "efficientnet-lite{variant}.tar.gz")
EMA_SUFFIX = "/ExponentialMovingAverage"

_BLOCK_NAME = re.compile(r"^(block\d+[a-z]+)_")
_SCOPE_BY_PREFIX = {"stem_": "stem", "top_": "head"}


def official_checkpoint_dir(variant: int) -> Path:
    """Where the extracted tarball is looked for: $KERAS_HOME/models/efficientnet-liteN (~/.keras by default)."""
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return keras_home / "models" / f"efficientnet-lite{variant}"


def official_variable_names(model: Any, variant: int) -> list[tuple[Any, list[str]]]:
    """(layer, checkpoint variable names in the order of layer.weights) for every backbone layer with weights.

    Layers that are not part of the EfficientNet-Lite backbone (a head, say) are left out.
    """
    k = keras().layers
    # Checked in this order: DepthwiseConv2D is not a Conv2D subclass in tf_keras, but be explicit.
    kinds = ((k.DepthwiseConv2D, "depthwise_conv2d", ("depthwise_kernel",)),
             (k.Conv2D, "conv2d", ("kernel",)),
             (k.BatchNormalization, "tpu_batch_normalization", ("gamma", "beta", "moving_mean", "moving_variance")))
    block_scopes: dict[str, str] = {}
    seen_in_scope: dict[tuple[str, str], int] = {}
    plan = []
    for layer in model.layers:  # topological order == call order inside each block
        scope = _scope(layer.name, block_scopes)
        kind = next(((tf1_name, variables) for cls, tf1_name, variables in kinds if isinstance(layer, cls)), None)
        if scope is None or kind is None or not layer.weights:
            continue
        tf1_name, variables = kind
        count = seen_in_scope.get((scope, tf1_name), 0)
        seen_in_scope[(scope, tf1_name)] = count + 1
        layer_name = tf1_name if count == 0 else f"{tf1_name}_{count}"
        plan.append((layer, [f"efficientnet-lite{variant}/{scope}/{layer_name}/{v}" for v in variables]))
    return plan


def _scope(layer_name: str, block_scopes: dict[str, str]) -> str | None:
    for prefix, scope in _SCOPE_BY_PREFIX.items():
        if layer_name.startswith(prefix):
            return scope
    match = _BLOCK_NAME.match(layer_name)
    if not match:
        return None
    # Blocks are numbered in the order they appear: block1a -> blocks_0, block2a -> blocks_1, ...
    return block_scopes.setdefault(match.group(1), f"blocks_{len(block_scopes)}")


def load_official_checkpoint(model: Any, checkpoint_dir: str | Path, variant: int) -> int:
    """Set every backbone weight of `model` from the official checkpoint in `checkpoint_dir`.

    All or nothing: if any variable is missing or has the wrong shape, raise InputError naming the
    first ones and change no weight. Return the number of layers loaded.
    """
    checkpoint_dir = Path(checkpoint_dir)
    prefix = _checkpoint_prefix(checkpoint_dir)
    try:
        reader = tf().train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
    except (tf().errors.OpError, ValueError) as exc:
        raise InputError(f"{checkpoint_dir}: cannot read checkpoint {prefix} ({str(exc).splitlines()[0]})") from exc

    plan = official_variable_names(model, variant)
    if not plan:
        raise InputError(f"{model.name}: no EfficientNet-Lite layers to load a checkpoint into")
    values: list[tuple[Any, list[Any]]] = []
    problems: list[str] = []
    for layer, names in plan:
        arrays = []
        for weight, name in zip(layer.weights, names):
            source = name + EMA_SUFFIX if name + EMA_SUFFIX in shapes else name
            expected = tuple(weight.shape)
            if source not in shapes:
                problems.append(f"{name} missing (for {layer.name})")
            elif tuple(shapes[source]) != expected:
                problems.append(f"{source} has shape {tuple(shapes[source])}, {layer.name} needs {expected}")
            else:
                arrays.append(reader.get_tensor(source))
        values.append((layer, arrays))
    if problems:
        raise InputError(
            f"{checkpoint_dir}: not an efficientnet-lite{variant} checkpoint for this model: "
            f"{len(problems)} variable(s) missing or mismatched, first: {'; '.join(problems[:5])}")
    for layer, arrays in values:
        layer.set_weights(arrays)
    return len(values)


def _checkpoint_prefix(checkpoint_dir: Path) -> str:
    """The checkpoint in `checkpoint_dir`: the one its `checkpoint` state file names, else its only *.index."""
    if not checkpoint_dir.is_dir():
        raise InputError(f"{checkpoint_dir}: no such checkpoint directory")
    latest = tf().train.latest_checkpoint(str(checkpoint_dir))
    if latest:
        return latest
    indexes = sorted(checkpoint_dir.glob("*.index"))
    if len(indexes) != 1:
        found = ", ".join(p.name for p in indexes) or "none"
        raise InputError(f"{checkpoint_dir}: expected one TF checkpoint (model.ckpt.index and .data files), "
                         f"found {found}")
    return str(indexes[0].with_suffix(""))
