"""MobileNetV3-Small/Large rebuilt from plain Keras layers, so TFMOT can quantize them (QAT).

The architecture is tf_keras.applications' MobileNetV3 (include_top=False, include_preprocessing=False):
same blocks, kernel sizes, expansions, squeeze-excite ratio and activations, and the same names on
every layer that carries weights, so weights copy across by name. What differs: hard-sigmoid/hard-swish
are the single layers of edgetl.backbones.layers instead of TFOpLambda arithmetic, and activation
layers have names. The model is flat.

The minimalistic variants (the paper's edge models, the application's minimalistic=True) keep the
expansions, channels, strides and layer names but have no squeeze-excite, ReLU everywhere (stem and
Conv_1 included) and 3x3 depthwise kernels only. Keras publishes their ImageNet weights for alpha 1.0 only.

Importing this module does not import TensorFlow; building a model does.
"""

from __future__ import annotations

from typing import Any

from edgetl.tf_env import keras

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.999
SE_RATIO = 0.25

# One row per inverted-residual block: (expansion, output channels at alpha 1, kernel, stride,
# squeeze-excite, activation) -- the stack_fn of tf_keras.applications with minimalistic=False;
# minimalistic_blocks() maps them to the minimalistic=True ones.
SMALL_BLOCKS = (
    (1, 16, 3, 2, True, "relu"),
    (72 / 16, 24, 3, 2, False, "relu"),
    (88 / 24, 24, 3, 1, False, "relu"),
    (4, 40, 5, 2, True, "hard_swish"),
    (6, 40, 5, 1, True, "hard_swish"),
    (6, 40, 5, 1, True, "hard_swish"),
    (3, 48, 5, 1, True, "hard_swish"),
    (3, 48, 5, 1, True, "hard_swish"),
    (6, 96, 5, 2, True, "hard_swish"),
    (6, 96, 5, 1, True, "hard_swish"),
    (6, 96, 5, 1, True, "hard_swish"),
)
LARGE_BLOCKS = (
    (1, 16, 3, 1, False, "relu"),
    (4, 24, 3, 2, False, "relu"),
    (3, 24, 3, 1, False, "relu"),
    (3, 40, 5, 2, True, "relu"),
    (3, 40, 5, 1, True, "relu"),
    (3, 40, 5, 1, True, "relu"),
    (6, 80, 3, 2, False, "hard_swish"),
    (2.5, 80, 3, 1, False, "hard_swish"),
    (2.3, 80, 3, 1, False, "hard_swish"),
    (2.3, 80, 3, 1, False, "hard_swish"),
    (6, 112, 3, 1, True, "hard_swish"),
    (6, 112, 3, 1, True, "hard_swish"),
    (6, 160, 5, 2, True, "hard_swish"),
    (6, 160, 5, 1, True, "hard_swish"),
    (6, 160, 5, 1, True, "hard_swish"),
)


def minimalistic_blocks(blocks: tuple) -> tuple:
    """The minimalistic block table of `blocks`: 3x3 kernels, no squeeze-excite, ReLU."""
    return tuple((expansion, filters, 3, stride, False, "relu") for expansion, filters, _, stride, _, _ in blocks)


def build_mobilenet_v3_small(image_size: int, alpha: float, weights: str | None) -> Any:
    """MobileNetV3-Small, input (image_size, image_size, 3) in [-1, 1] -> last feature map (Conv_1)."""
    return _build("small", SMALL_BLOCKS, image_size, alpha, weights)


def build_mobilenet_v3_large(image_size: int, alpha: float, weights: str | None) -> Any:
    """MobileNetV3-Large, input (image_size, image_size, 3) in [-1, 1] -> last feature map (Conv_1)."""
    return _build("large", LARGE_BLOCKS, image_size, alpha, weights)


def build_mobilenet_v3_small_minimalistic(image_size: int, alpha: float, weights: str | None) -> Any:
    """MobileNetV3-Small minimalistic (no squeeze-excite, ReLU, 3x3 kernels); as build_mobilenet_v3_small."""
    return _build("small", SMALL_BLOCKS, image_size, alpha, weights, minimalistic=True)


def build_mobilenet_v3_large_minimalistic(image_size: int, alpha: float, weights: str | None) -> Any:
    """MobileNetV3-Large minimalistic (no squeeze-excite, ReLU, 3x3 kernels); as build_mobilenet_v3_large."""
    return _build("large", LARGE_BLOCKS, image_size, alpha, weights, minimalistic=True)


def application(model_type: str, image_size: int, alpha: float, weights: str | None,
                minimalistic: bool = False) -> Any:
    """The tf_keras.applications model this module rebuilds (the source of ImageNet weights)."""
    build = {"small": keras().applications.MobileNetV3Small, "large": keras().applications.MobileNetV3Large}[model_type]
    return build(input_shape=(image_size, image_size, 3), alpha=alpha, minimalistic=minimalistic,
                 include_top=False, weights=weights, include_preprocessing=False)


def copy_weights_by_name(source: Any, target: Any) -> int:
    """Copy the weights of every weighted layer of `source` into the `target` layer of the same
    name; return how many layers were copied. A missing name or a shape mismatch raises."""
    copied = 0
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())
            copied += 1
    return copied


def _build(model_type: str, blocks: tuple, image_size: int, alpha: float, weights: str | None,
           minimalistic: bool = False) -> Any:
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None, not {weights!r}")
    if image_size < 32:
        raise ValueError(f"input size must be at least 32x32, not {image_size}")
    source = None
    if weights == "imagenet":
        source = application(model_type, image_size, alpha, "imagenet", minimalistic=minimalistic)
    if minimalistic:
        blocks = minimalistic_blocks(blocks)
    top_activation = "relu" if minimalistic else "hard_swish"  # the stem's and Conv_1's
    layers = keras().layers
    inputs = layers.Input(shape=(image_size, image_size, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="Conv")(inputs)
    x = _batch_norm(x, "Conv/BatchNorm")
    x = _activation(x, top_activation, "Conv/")
    for block_id, (expansion, filters, kernel, stride, squeeze_excite, activation) in enumerate(blocks):
        x = _inverted_res_block(x, expansion, _depth(filters * alpha), kernel, stride, squeeze_excite, activation,
                                block_id)
    x = layers.Conv2D(_depth(x.shape[-1] * 6), 1, padding="same", use_bias=False, name="Conv_1")(x)
    x = _batch_norm(x, "Conv_1/BatchNorm")
    x = _activation(x, top_activation, "Conv_1/")
    model = keras().Model(inputs, x, name=f"MobilenetV3{model_type}")
    if source is not None:
        copy_weights_by_name(source, model)
    return model


def _inverted_res_block(x: Any, expansion: float, filters: int, kernel: int, stride: int, squeeze_excite: bool,
                        activation: str, block_id: int) -> Any:
    layers = keras().layers
    shortcut = x
    in_filters = x.shape[-1]
    prefix = f"expanded_conv_{block_id}/" if block_id else "expanded_conv/"
    if block_id:
        x = layers.Conv2D(_depth(in_filters * expansion), 1, padding="same", use_bias=False, name=prefix + "expand")(x)
        x = _batch_norm(x, prefix + "expand/BatchNorm")
        x = _activation(x, activation, prefix + "expand/")
    if stride == 2:
        x = layers.ZeroPadding2D(padding=_correct_pad(x.shape[1:3], kernel), name=prefix + "depthwise/pad")(x)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same" if stride == 1 else "valid", use_bias=False,
                               name=prefix + "depthwise")(x)
    x = _batch_norm(x, prefix + "depthwise/BatchNorm")
    x = _activation(x, activation, prefix + "depthwise/")
    if squeeze_excite:
        x = _squeeze_excite(x, _depth(in_filters * expansion), prefix)
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=prefix + "project")(x)
    x = _batch_norm(x, prefix + "project/BatchNorm")
    if stride == 1 and in_filters == filters:
        x = layers.Add(name=prefix + "Add")([shortcut, x])
    return x


def _squeeze_excite(inputs: Any, filters: int, prefix: str) -> Any:
    from edgetl.backbones.layers import HardSigmoid

    layers = keras().layers
    name = prefix + "squeeze_excite/"
    x = layers.GlobalAveragePooling2D(keepdims=True, name=name + "AvgPool")(inputs)
    x = layers.Conv2D(_depth(filters * SE_RATIO), 1, padding="same", name=name + "Conv")(x)
    x = layers.ReLU(name=name + "Relu")(x)
    x = layers.Conv2D(filters, 1, padding="same", name=name + "Conv_1")(x)
    x = HardSigmoid(name=name + "hard_sigmoid")(x)
    return layers.Multiply(name=name + "Mul")([inputs, x])


def _activation(x: Any, activation: str, prefix: str) -> Any:
    from edgetl.backbones.layers import HardSwish

    if activation == "relu":
        return keras().layers.ReLU(name=prefix + "relu")(x)
    return HardSwish(name=prefix + "hard_swish")(x)


def _batch_norm(x: Any, name: str) -> Any:
    return keras().layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _depth(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of 8, never down by more than 10% (tf_keras' _depth)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _correct_pad(spatial: tuple, kernel: int) -> tuple:
    """Zero padding before a stride-2 depthwise conv (tf_keras' imagenet_utils.correct_pad)."""
    adjust = [1 if size is None else 1 - size % 2 for size in spatial]
    half = kernel // 2
    return ((half - adjust[0], half), (half - adjust[1], half))
