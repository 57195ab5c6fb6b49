"""Hard-sigmoid and hard-swish as real Keras layers, and what TFMOT needs to quantize them.

tf_keras.applications' MobileNetV3 writes these activations with raw TF ops (`x + 3.0`, `* (1/6)`),
which Keras records as TFOpLambda layers: TFMOT's quantize_apply cannot clone them (and its default
registry knows neither them nor the squeeze-excite `Multiply`). Here they are single layers, and
OutputQuantizeConfig fake-quantizes their output.

How hard-swish is lowered decides int8 speed. The float graph should fuse into TFLite's HARD_SWISH
op (XNNPACK runs it in float32). The int8 graph must not: XNNPACK has no int8 HARD_SWISH, so LiteRT
runs every one on its slow builtin kernel between XNNPACK partitions (MobileNetV3-Small, 224 px,
1 thread: int8 3.9 ms vs float32 1.6 ms). Written as int8 MUL, ADD, MUL it all stays in XNNPACK
(1.3 ms). for_int8_conversion() and the QAT helpers switch HardSwish to that form.

This module subclasses tf_keras classes, so importing it imports TensorFlow: import it only where
a model is built or loaded. A saved model names this module, so Keras imports it when loading.
"""

from __future__ import annotations

import contextlib
from typing import Any

import tensorflow_model_optimization as tfmot

from edgetl.tf_env import keras, tf

_quantizers = tfmot.quantization.keras.quantizers


@keras().utils.register_keras_serializable(package="edgetl")
class HardSigmoid(keras().layers.Layer):
    """relu6(x + 3) / 6, as in MobileNetV3's squeeze-excite gate."""

    def call(self, inputs: Any) -> Any:
        return tf().nn.relu6(inputs + 3.0) * (1.0 / 6.0)


@keras().utils.register_keras_serializable(package="edgetl")
class HardSwish(keras().layers.Layer):
    """x * relu6(x + 3) / 6, written one of two ways for the TFLite converter.

    elementwise=False (float export): x * (relu6(x + 3) * 1/6), the pattern the converter fuses into
    the HARD_SWISH builtin, which XNNPACK runs in float32.
    elementwise=True (int8 export): (x * 1/6) * relu6(x + 3), which the converter leaves as MUL, ADD
    (fused RELU6) and MUL. XNNPACK has no int8 HARD_SWISH: LiteRT would run each one on its builtin
    kernel and cut the XNNPACK graph into pieces around it, which made int8 slower than float32.
    """

    def __init__(self, elementwise: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.elementwise = bool(elementwise)

    def call(self, inputs: Any) -> Any:
        relu6 = tf().nn.relu6(inputs + 3.0)
        if self.elementwise:
            return (inputs * (1.0 / 6.0)) * relu6
        return inputs * (relu6 * (1.0 / 6.0))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "elementwise": self.elementwise}


@keras().utils.register_keras_serializable(package="edgetl")
class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """No weights, no inner activations: fake-quantize the layer's output to 8 bits (asymmetric,
    per tensor, moving-average range), like TFMOT's own config for ReLU/Add."""

    def get_weights_and_quantizers(self, layer: Any) -> list:
        return []

    def get_activations_and_quantizers(self, layer: Any) -> list:
        return []

    def set_quantize_weights(self, layer: Any, quantize_weights: list) -> None:
        pass

    def set_quantize_activations(self, layer: Any, quantize_activations: list) -> None:
        pass

    def get_output_quantizers(self, layer: Any) -> list:
        return [_quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self) -> dict[str, Any]:
        return {}


def output_quantized_layer_types() -> tuple[type, ...]:
    """Layer types TFMOT's default scheme cannot quantize by itself, annotated with OutputQuantizeConfig."""
    k = keras().layers
    return (HardSigmoid, HardSwish, k.Multiply, k.Dot, k.UnitNormalization, k.Rescaling)  # the last two: prototype head


def quantize_scope() -> contextlib.AbstractContextManager:
    """The scope quantize_apply, cloning and loading a QAT model need to know edgetl's objects."""
    return tfmot.quantization.keras.quantize_scope(
        {"HardSigmoid": HardSigmoid, "HardSwish": HardSwish, "OutputQuantizeConfig": OutputQuantizeConfig})


def for_int8_conversion(model: Any) -> Any:
    """`model` ready for full-int8 TFLite conversion: a copy with the same weights whose HardSwish
    layers are elementwise (XNNPACK runs int8 MUL/ADD, not int8 HARD_SWISH); `model` itself when it
    has no fused HardSwish. Float exports should convert `model` as it is."""
    if not any(isinstance(layer, HardSwish) and not layer.elementwise for layer in model.layers):
        return model
    copy = keras().models.clone_model(model, clone_function=_elementwise_clone)
    copy.set_weights(model.get_weights())
    return copy


def annotate_for_qat(model: Any) -> Any:
    """`model` (flat, functional) with every layer wrapped for quantize_apply: the layers of
    output_quantized_layer_types() with OutputQuantizeConfig, the rest left to TFMOT's default scheme.
    Like TFMOT's quantize_annotate_model, the wrappers hold the original layers (weights shared),
    except that HardSwish layers are replaced by elementwise ones (see for_int8_conversion)."""
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    special = output_quantized_layer_types()

    def annotate_layer(layer: Any) -> Any:
        if isinstance(layer, HardSwish):
            layer = _elementwise_clone(layer)
        return annotate(layer, quantize_config=OutputQuantizeConfig() if isinstance(layer, special) else None)

    with quantize_scope():
        return keras().models.clone_model(model, clone_function=annotate_layer)


def quantize_model(model: Any, scheme: Any = None) -> Any:
    """The QAT model of `model` (fake-quantized, trainable, its own copy of the weights); `scheme` is a
    TFMOT QuantizeScheme (default: Default8BitQuantizeScheme)."""
    with quantize_scope():
        annotated = annotate_for_qat(model)
        if scheme is None:
            return tfmot.quantization.keras.quantize_apply(annotated)
        return tfmot.quantization.keras.quantize_apply(annotated, scheme)


def _elementwise_clone(layer: Any) -> Any:
    config = layer.get_config()
    if isinstance(layer, HardSwish):
        config["elementwise"] = True
    return layer.__class__.from_config(config)
