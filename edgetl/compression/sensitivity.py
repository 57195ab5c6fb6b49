"""Which layers int8 hurts most: a per-layer sensitivity pass on the float Keras model.

int8 activations are quantized per tensor: one scale, (max - min) / 255, for every channel. A
tensor whose channels differ wildly in magnitude (an outlier channel, a layer that blew up in
training) loses the small channels in rounding. For every tensor that survives conversion as a
tensor of its own, on calibration images, the score is the median over channels of

    quantization noise rms / channel rms  =  (step / sqrt(12)) / rms_c

(0.01 is healthy; >= 0.1 means most channels keep only a few levels). Keeping such a tensor float
means keeping its producer and its consumers float: `fallback_layers` names them, which is what
the converters' `float_fallback` takes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgetl.tf_env import keras

# Layers whose output tensor disappears in conversion: folded into the op before it.
_FUSED_KINDS = ("BatchNormalization", "ReLU", "Activation", "Dropout", "InputLayer")


def layer_sensitivity(model: Any, images: np.ndarray, batch_size: int = 4) -> list[dict[str, Any]]:
    """Tensors ranked from most to least sensitive: [{layer, score, min, max}]."""
    layers = [layer for layer in model.layers[:-1] if _is_quantization_point(layer)]
    if not layers:
        return []
    probe = keras().Model(model.inputs, [layer.output for layer in layers])
    low = np.full(len(layers), np.inf)
    high = np.full(len(layers), -np.inf)
    squares: list[np.ndarray | None] = [None] * len(layers)
    count = 0
    for start in range(0, len(images), batch_size):
        outputs = probe(images[start:start + batch_size], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for i, tensor in enumerate(outputs):
            values = tensor.numpy().astype(np.float64)
            low[i], high[i] = min(low[i], values.min()), max(high[i], values.max())
            per_channel = np.sum(values.reshape(-1, values.shape[-1]) ** 2, axis=0)
            squares[i] = per_channel if squares[i] is None else squares[i] + per_channel
        count += int(outputs[0].shape[0]) * int(np.prod(outputs[0].shape[1:-1]))
    ranked = []
    for i, layer in enumerate(layers):
        rms = np.sqrt(squares[i] / max(count, 1))
        step = (max(high[i], 0.0) - min(low[i], 0.0)) / 255.0  # the range always includes 0
        alive = rms[rms > 1e-12]
        score = float(np.median((step / np.sqrt(12.0)) / alive)) if alive.size else 0.0
        ranked.append({"layer": layer.name, "score": round(score, 5),
                       "min": round(float(low[i]), 5), "max": round(float(high[i]), 5)})
    return sorted(ranked, key=lambda r: -r["score"])


def fallback_layers(model: Any, tensors: list[str]) -> tuple[str, ...]:
    """The layers to keep float so the outputs of `tensors` (layer names) stay float: the op that
    makes each (with the BatchNorm/activation layers fused into it) and the ops that read it."""
    chosen: set[str] = set()
    for name in tensors:
        layer = model.get_layer(name)
        chosen.update(l.name for l in _fused_chain_back(layer))
        for consumer in _consumers(layer):
            chosen.add(consumer.name)
            chosen.update(c.name for c in _fused_followers(consumer))
    return tuple(sorted(chosen))


def _consumers(layer: Any) -> list[Any]:
    return [node.outbound_layer for node in layer._outbound_nodes]  # tf_keras keeps no public accessor


def _producers(layer: Any) -> list[Any]:
    inbound = layer.inbound_nodes[0].inbound_layers if layer.inbound_nodes else []
    return inbound if isinstance(inbound, list) else [inbound]


def _fused_chain_back(layer: Any) -> list[Any]:
    """`layer`, and while it is BatchNorm/activation, the layer it is fused into."""
    chain = [layer]
    while type(chain[-1]).__name__ in _FUSED_KINDS[:-1] and len(_producers(chain[-1])) == 1:
        chain.append(_producers(chain[-1])[0])
    return chain


def _fused_followers(layer: Any) -> list[Any]:
    followers = []
    for consumer in _consumers(layer):
        if type(consumer).__name__ in _FUSED_KINDS:
            followers.append(consumer)
            followers += _fused_followers(consumer)
    return followers


def _is_quantization_point(layer: Any) -> bool:
    """Whether the layer's output exists as a tensor after conversion: not when every reader is a
    BatchNorm/activation that the converter fuses into this layer's op."""
    if type(layer).__name__ in ("InputLayer", "Dropout") or isinstance(layer.output, (list, tuple)):
        return False
    consumers = _consumers(layer)
    return not (consumers and all(type(c).__name__ in _FUSED_KINDS for c in consumers))
