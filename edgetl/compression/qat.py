"""Quantization-aware training (TFMOT 8-bit scheme, plus edgetl's HardSwish/HardSigmoid configs).

`preserve="prune"` (PQAT) keeps a pruned model's zeros; `preserve="cluster"` (CQAT) keeps its
clusters (TFMOT's collaborative-optimization schemes): QAT after pruning or clustering would
otherwise train them away.

TFMOT starts every activation range at -6..6 (the input's at 0..0) and moves it by a 0.999 moving
average per training step, so a short fine-tune never reaches tensors that span more: EfficientNet-Lite0's
residual sums reach 50-100, and the demo model's QAT copy answered at chance (10 %) before training and
22 % after 2 epochs. calibrate_ranges() starts each range at the float model's measured min/max on the
calibration images, as post-training quantization would: the QAT copy starts where int8 PTQ is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PRESERVE = ("none", "prune", "cluster", "prune+cluster")
# TFMOT's quantizer variables, by the tensor of the float layer whose range they hold.
_OUTPUT_RANGES = ("output", "post_activation")
_PRE_ACTIVATION = "pre_activation"


def apply(model: Any, preserve: str = "none", calibration: np.ndarray | None = None) -> Any:
    """The fake-quantized, trainable copy of `model`; works for every registered backbone. With
    `calibration` images, its activation ranges start at `model`'s measured ones (calibrate_ranges)."""
    import tensorflow_model_optimization as tfmot

    from edgetl.backbones.layers import quantize_model

    combine = tfmot.experimental.combine
    scheme = {"none": None, "prune": combine.Default8BitPrunePreserveQuantizeScheme(),
              "cluster": combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False),
              "prune+cluster": combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)}[preserve]
    wrapped = quantize_model(model, scheme)
    if calibration is not None:
        calibrate_ranges(wrapped, model, calibration)
    return wrapped


def calibrate_ranges(wrapped: Any, model: Any, images: np.ndarray, batch_size: int = 32) -> int:
    """Set every activation quantizer of `wrapped` (quantize_model of `model`) to the min/max (widened to
    include 0) of the float tensor it quantizes, measured by running `model` on `images`. Returns how
    many ranges were set; a quantizer whose tensor cannot be found keeps TFMOT's start."""
    from edgetl.tf_env import keras

    ranges: dict[tuple[str, str], list[tuple[Any, Any]]] = {}  # (float layer, "output"|"pre"|"input") -> vars
    float_names = {m.name for m in model.layers}
    for layer in wrapped.layers:
        found = {w.name.split("/")[-1].split(":")[0]: w for w in layer.weights}
        inner = getattr(layer, "layer", None)
        if inner is not None and inner.name in float_names:
            for prefix in (*_OUTPUT_RANGES, _PRE_ACTIVATION):
                if f"{prefix}_min" in found:
                    kind = "pre" if prefix == _PRE_ACTIVATION else "output"
                    ranges.setdefault((inner.name, kind), []).append((found[f"{prefix}_min"], found[f"{prefix}_max"]))
        elif type(layer).__name__ == "QuantizeLayer" and f"{layer.name}_min" in found:
            inbound = [node.inbound_layers for node in layer._inbound_nodes][0]
            if type(inbound).__name__ == "InputLayer":
                ranges.setdefault(("", "input"), []).append((found[f"{layer.name}_min"], found[f"{layer.name}_max"]))
    keys = [key for key in ranges if key[1] != "input"]
    # A fresh graph: after pruning or clustering, `model`'s layers also sit in their wrappers' graphs, and
    # layer.output would be a tensor of another graph.
    model, weights = keras().models.clone_model(model), model.get_weights()
    model.set_weights(weights)
    tensors = [model.get_layer(name).output if kind == "output" else model.get_layer(name).input for name, kind in keys]
    probe = keras().Model(model.inputs, tensors)
    linear = {name: _without_activation(model.get_layer(name)) for name, kind in keys if kind == "pre"}
    low = {key: np.inf for key in ranges}
    high = {key: -np.inf for key in ranges}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        outputs = probe(batch, training=False)
        values = dict(zip(keys, outputs if isinstance(outputs, (list, tuple)) else [outputs]))
        values |= {key: linear[key[0]](value) for key, value in values.items() if key[1] == "pre"}
        values[("", "input")] = batch
        for key in ranges:
            value = np.asarray(values[key])
            low[key], high[key] = min(low[key], float(value.min())), max(high[key], float(value.max()))
    for key, pairs in ranges.items():
        for low_var, high_var in pairs:
            low_var.assign(min(low[key], 0.0))
            high_var.assign(max(high[key], 0.0))
    return sum(len(pairs) for pairs in ranges.values())


def _without_activation(layer: Any) -> Any:
    """A copy of `layer` (same weights) whose activation is linear: its pre-activation output."""
    copy = layer.__class__.from_config({**layer.get_config(), "activation": "linear"})
    copy.build(layer.input_shape)
    copy.set_weights(layer.get_weights())
    return copy


def strip(model: Any) -> Any:
    """A QAT model converts to int8 as it is: its fake-quant ranges are what the converter uses."""
    return model


def float_copy(wrapped: Any, model: Any) -> Any:
    """A plain float copy of `model` (the float model `apply` wrapped) with the weights QAT trained in
    `wrapped`, before their 8-bit rounding (a preserved pruning mask applied; CQAT keeps its clustered
    values in the weights themselves). For converters that quantize by themselves (ONNX Runtime, whose
    weights are 7-bit: rounding TFMOT's 8-bit values again costs more than QAT gains). Measured on the
    demo run, ONNX int8 on 359 validation images against 0.9777 float: PTQ 0.9721, the QAT graph
    converted as it is 0.9638, this copy with rounded weights 0.9749, this copy 0.9805."""
    from edgetl.backbones.layers import quantize_scope
    from edgetl.errors import CheckFailedError
    from edgetl.tf_env import keras

    trained: dict[str, dict[str, np.ndarray]] = {}
    for layer in wrapped.layers:
        inner = getattr(layer, "layer", layer)
        values = {_short(w.name): w.numpy() for w in inner.weights}
        # The wrapper holds the quantized weights (a kernel), no longer the layer. PQAT applies its mask in the
        # quantizer, not to the weight.
        for weight, _, variables in getattr(layer, "_weight_vars", ()):
            mask = variables["sparsity_mask"].numpy() if "sparsity_mask" in variables else 1
            values[_short(weight.name)] = weight.numpy() * mask
        trained[inner.name] = values
    with quantize_scope():
        copy = keras().models.clone_model(model)
    copy.set_weights(model.get_weights())
    missing = [layer.name for layer in copy.layers if layer.weights and layer.name not in trained]
    if missing:  # it would keep its pre-QAT weights: a file that is neither the float model nor the QAT one
        raise CheckFailedError(f"QAT's float copy: {len(missing)} layer(s) have no counterpart in the QAT model "
                               f"(first: {missing[0]}); use the .tflite file of this recipe")
    for layer in copy.layers:
        if layer.weights:
            layer.set_weights([trained[layer.name][_short(w.name)] for w in layer.weights])
    return copy


def _short(name: str) -> str:
    return name.split("/")[-1].split(":")[0]
