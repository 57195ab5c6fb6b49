"""Hard-sigmoid and hard-swish as real Keras layers, and what TFMOT needs to quantize them.

tf_keras.applications' MobileNetV3 writes these activations with raw TF ops (`x + 3.0`, `* (1/6)`),
which Keras records as TFOpLambda layers: TFMOT's quantize_apply cannot clone them (and its default
registry knows neither them nor the squeeze-excite `Multiply`). Here they are single layers, and
OutputQuantizeConfig fake-quantizes their output.

How hard-swish is lowered decides int8 speed. The float graph should fuse into TFLite's HARD_SWISH
op (XNNPACK runs it in float32). The int8 graph must not: XNNPACK has no int8 HARD_SWISH, so LiteRT
runs every one on its slow builtin kernel between XNNPACK partitions (MobileNetV3-Small, 224 px,
1 thread: int8 3.9 ms vs float32 1.6 ms). Written as int8 MUL, ADD, MUL it all stays in XNNPACK
(1.3 ms). for_int8_conversion() and the QAT helpers switch HardSwish to that form; for_int8_conversion
also moves the 1/6 into the kernels that read the activation where it can, one MUL fewer per
hard-swish (LiteRT int8/fp32 in the suite, 224 px, 1 thread: Small 0.79 -> 0.64, Large 0.68 -> 0.52).
The folded form needs the measured ranges of converters/tflite_calibration.py: TFLiteConverter's own
calibration gave relu6(x + 3) the product's range and the int8 file fell to chance.

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
    """x * relu6(x + 3) / 6, written one of three ways for the TFLite converter.

    elementwise=False (float export): x * (relu6(x + 3) * 1/6), the pattern the converter fuses into
    the HARD_SWISH builtin, which XNNPACK runs in float32.
    elementwise=True (int8 export): (x * 1/6) * relu6(x + 3), which the converter leaves as MUL, ADD
    (fused RELU6) and MUL. XNNPACK has no int8 HARD_SWISH: LiteRT would run each one on its builtin
    kernel and cut the XNNPACK graph into pieces around it, which made int8 slower than float32.
    unscaled=True (int8 export, 1/6 folded): x * relu6(x + 3), six times hard-swish: ADD and MUL only.
    Only valid where every path from the output ends in a kernel that was divided by 6
    (for_int8_conversion decides where).
    """

    def __init__(self, elementwise: bool = False, unscaled: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.elementwise = bool(elementwise or unscaled)
        self.unscaled = bool(unscaled)

    def call(self, inputs: Any) -> Any:
        relu6 = tf().nn.relu6(inputs + 3.0)
        if self.unscaled:
            return inputs * relu6
        if self.elementwise:
            return (inputs * (1.0 / 6.0)) * relu6
        return inputs * (relu6 * (1.0 / 6.0))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "elementwise": self.elementwise, "unscaled": self.unscaled}


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
    """`model` ready for full-int8 TFLite conversion: a copy computing the same function whose HardSwish
    layers are elementwise (XNNPACK runs int8 MUL/ADD, not int8 HARD_SWISH) and, where every path from
    one ends in a kernel (see _fold_plan), unscaled, its 1/6 folded into those kernels: one int8 MUL fewer
    per hard-swish. `model` itself when it has no fused HardSwish. Float exports convert `model` as it is."""
    if not any(isinstance(layer, HardSwish) and not layer.elementwise for layer in model.layers):
        return model
    plan = _fold_plan(model)

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if isinstance(layer, HardSwish):
            config.update(elementwise=True, unscaled=layer.name in plan)
        return layer.__class__.from_config(config)

    copy = keras().models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    for name in [kernel for kernels in plan.values() for kernel in kernels]:
        layer = copy.get_layer(name)
        kernel, *rest = layer.get_weights()
        layer.set_weights([kernel / 6.0, *rest])
    return copy


# Layers linear in the input a scaled tensor reaches: the scale passes through. A Multiply only when its
# other input is unscaled (the squeeze-excite gate, computed through a kernel that absorbed the scale).
_SCALE_PASSES = ("ZeroPadding2D", "GlobalAveragePooling2D", "AveragePooling2D", "Dropout", "Multiply")
_SCALE_ABSORBS = ("Conv2D", "DepthwiseConv2D", "Dense")


def _fold_plan(model: Any) -> dict[str, list[str]]:
    """{HardSwish layer name: the kernels that absorb its 1/6} for every fused HardSwish whose output
    reaches only kernels through scale-passing layers (never an Add, a residual, or the model output).
    Batch norms follow their convolutions, so a kernel's output is never seen unnormalised."""
    outputs = {id(t) for t in model.outputs}
    plan: dict[str, list[str]] = {}
    for layer in model.layers:
        if not isinstance(layer, HardSwish) or layer.elementwise:
            continue
        kernels, scaled, frontier = [], {layer.name}, [layer]
        while frontier:
            current = frontier.pop()
            if id(current.output) in outputs:
                break
            for consumer in _consumers(current):
                kind = type(consumer).__name__
                if kind not in _SCALE_ABSORBS + _SCALE_PASSES:
                    break
                if consumer.name not in scaled:
                    scaled.add(consumer.name)
                    (kernels if kind in _SCALE_ABSORBS else frontier).append(consumer)
            else:
                continue
            break
        else:  # every path ended in a kernel; each Multiply must scale exactly one of its inputs
            if kernels and all(sum(inbound.name in scaled for inbound in _producers(m)) == 1
                               for m in model.layers if m.name in scaled and type(m).__name__ == "Multiply"):
                plan[layer.name] = [k.name for k in kernels]
    return plan


def _producers(layer: Any) -> list[Any]:
    return [inbound for node in layer._inbound_nodes for inbound in node.inbound_layers]


def _consumers(layer: Any) -> list[Any]:
    return [node.outbound_layer for node in layer._outbound_nodes]


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
