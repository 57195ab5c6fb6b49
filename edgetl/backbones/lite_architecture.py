"""EfficientNet-Lite0..4 as a flat tf_keras functional model, input -> 1280-channel ReLU6 feature map.

Follows the published design (tensorflow/tpu models/official/efficientnet/lite/efficientnet_lite_builder.py
and the parent efficientnet_model.py): EfficientNet-B0's MBConv blocks without squeeze-excite, ReLU6
everywhere, the stem (32 filters) and head (1280 filters) not scaled, and neither are the repeats of the
first and last block groups. Convolutions use 'same' padding and no bias; BatchNormalization uses the
reference's momentum 0.99 and epsilon 1e-3.

Every layer is a plain Keras layer that TFMOT's default 8-bit scheme quantizes (Conv2D,
DepthwiseConv2D, BatchNormalization, ReLU(max_value=6), Add; Dropout only when stochastic depth is
asked for), so the model needs no custom QuantizeConfig. Layer names (`stem_conv`, `block2a_expand_conv`,
`top_bn`, ...) are stable: checkpoints.py and lite_imagenet.py map ImageNet weights onto them.
"""

from __future__ import annotations

import math
from typing import Any

from edgetl.backbones.spec import Preprocessing
from edgetl.tf_env import keras

# The lite models' own input normalization (efficientnet_lite_builder.py MEAN_RGB / STDDEV_RGB:
# "Edge models use inception-style MEAN and STDDEV for better post-quantization").
EFFICIENTNET_LITE_PREPROCESSING = Preprocessing(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))

# variant -> (width coefficient, depth coefficient, resolution), from efficientnet_lite_params().
EFFICIENTNET_LITE_COEFFICIENTS: dict[int, tuple[float, float, int]] = {
    0: (1.0, 1.0, 224),
    1: (1.0, 1.1, 240),
    2: (1.1, 1.2, 260),
    3: (1.2, 1.4, 280),
    4: (1.4, 1.8, 300),
}

# EfficientNet-B0's block groups (_DEFAULT_BLOCKS_ARGS without the squeeze-excite ratio):
# (kernel size, repeats, first stride, expand ratio, output filters).
BLOCK_GROUPS = (
    (3, 1, 1, 1, 16),
    (3, 2, 2, 6, 24),
    (5, 2, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (5, 3, 1, 6, 112),
    (5, 4, 2, 6, 192),
    (3, 1, 1, 6, 320),
)
STEM_FILTERS = 32
TOP_FILTERS = 1280
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
FILTER_DIVISOR = 8


def round_filters(filters: int, width: float) -> int:
    """Scale `filters` by `width`, round to a multiple of 8, never more than 10% down (round_filters)."""
    scaled = filters * width
    rounded = max(FILTER_DIVISOR, int(scaled + FILTER_DIVISOR / 2) // FILTER_DIVISOR * FILTER_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += FILTER_DIVISOR
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a group's block count by `depth`, rounding up (round_repeats)."""
    return int(math.ceil(depth * repeats))


def block_plan(variant: int, alpha: float = 1.0) -> list[dict[str, Any]]:
    """Every MBConv block in build order: name, kernel, stride, expand ratio, output filters.

    The block index in this list is the official checkpoint's `blocks_<index>` scope.
    """
    width, depth, _ = EFFICIENTNET_LITE_COEFFICIENTS[variant]
    last_group = len(BLOCK_GROUPS) - 1
    plan = []
    for group, (kernel, repeats, stride, expand, filters) in enumerate(BLOCK_GROUPS):
        # fix_head_stem: the first and last groups keep their repeat count.
        count = repeats if group in (0, last_group) else round_repeats(repeats, depth)
        for i in range(count):
            plan.append({"name": f"block{group + 1}{chr(ord('a') + i)}", "kernel": kernel,
                         "stride": stride if i == 0 else 1, "expand": expand,
                         "filters": round_filters(filters, width * alpha)})
    return plan


def build_network(variant: int, image_size: int, alpha: float, stochastic_depth_rate: float) -> Any:
    layers = keras().layers
    inputs = layers.Input(shape=(image_size, image_size, 3), name="image")
    x = _conv_bn_relu6(inputs, STEM_FILTERS, 3, 2, "stem")
    plan = block_plan(variant, alpha)
    for index, block in enumerate(plan):
        # The reference lowers the survival probability linearly with the block index.
        drop_rate = stochastic_depth_rate * index / len(plan)
        x = _mbconv_block(x, block, drop_rate)
    x = _conv_bn_relu6(x, TOP_FILTERS, 1, 1, "top")
    return keras().Model(inputs, x, name=f"efficientnet_lite{variant}")


def _mbconv_block(inputs: Any, block: dict[str, Any], drop_rate: float) -> Any:
    """Inverted residual: [expand 1x1 + BN + ReLU6] -> depthwise + BN + ReLU6 -> project 1x1 + BN [+ input]."""
    layers = keras().layers
    name = block["name"]
    in_filters = inputs.shape[-1]
    x = inputs
    if block["expand"] != 1:
        x = _conv_bn_relu6(x, in_filters * block["expand"], 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(block["kernel"], strides=block["stride"], padding="same", use_bias=False,
                               depthwise_initializer=_kernel_initializer(), name=f"{name}_dwconv")(x)
    x = _batch_norm(f"{name}_dwconv_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{name}_dwconv_activation")(x)
    x = layers.Conv2D(block["filters"], 1, padding="same", use_bias=False,
                      kernel_initializer=_kernel_initializer(), name=f"{name}_project_conv")(x)
    x = _batch_norm(f"{name}_project_bn")(x)
    if block["stride"] == 1 and in_filters == block["filters"]:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _conv_bn_relu6(x: Any, filters: int, kernel: int, stride: int, prefix: str) -> Any:
    layers = keras().layers
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      kernel_initializer=_kernel_initializer(), name=f"{prefix}_conv")(x)
    x = _batch_norm(f"{prefix}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{prefix}_activation")(x)


def _batch_norm(name: str) -> Any:
    return keras().layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _kernel_initializer() -> Any:
    # The reference's conv_kernel_initializer: normal with stddev sqrt(2 / fan_out).
    return keras().initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")
