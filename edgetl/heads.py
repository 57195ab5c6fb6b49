"""Classification heads on the backbone's feature map. Adding one is a function and a registry line.

- `linear`: global average pooling, dropout, softmax classifier (feature extraction's classic head).
- `mlp`: global average pooling, a 256-unit ReLU layer, dropout, softmax classifier.
- `attention`: attention pooling instead of the average: a 1x1 convolution scores every spatial
  position, a softmax over positions turns the scores into weights, and the features are their
  weighted sum, so the head can look at where the object is. Plain layers only (CONV_2D, RESHAPE,
  SOFTMAX, BATCH_MATMUL in TFLite), so it exports, quantizes and runs on the same runtimes.
Every layer is named with HEAD_PREFIX so later stages can tell the head from the backbone.
"""

from __future__ import annotations

from typing import Any, Callable

from edgetl.tf_env import keras

HEAD_PREFIX = "head_"
MLP_UNITS = 256


def _classifier(x: Any, num_classes: int, dropout: float) -> Any:
    k = keras()
    x = k.layers.Dropout(dropout, name=f"{HEAD_PREFIX}dropout")(x)
    return k.layers.Dense(num_classes, activation="softmax", name=f"{HEAD_PREFIX}probs")(x)


def linear(features: Any, num_classes: int, dropout: float) -> Any:
    x = keras().layers.GlobalAveragePooling2D(name=f"{HEAD_PREFIX}pool")(features)
    return _classifier(x, num_classes, dropout)


def mlp(features: Any, num_classes: int, dropout: float) -> Any:
    k = keras()
    x = k.layers.GlobalAveragePooling2D(name=f"{HEAD_PREFIX}pool")(features)
    x = k.layers.Dense(MLP_UNITS, activation="relu", name=f"{HEAD_PREFIX}hidden")(x)
    return _classifier(x, num_classes, dropout)


def attention(features: Any, num_classes: int, dropout: float) -> Any:
    k = keras()
    height, width, channels = features.shape[1:]
    positions = height * width
    scores = k.layers.Conv2D(1, 1, name=f"{HEAD_PREFIX}attention_scores")(features)
    scores = k.layers.Reshape((positions,), name=f"{HEAD_PREFIX}attention_flat")(scores)
    weights = k.layers.Softmax(name=f"{HEAD_PREFIX}attention_weights")(scores)
    flat = k.layers.Reshape((positions, channels), name=f"{HEAD_PREFIX}attention_features")(features)
    pooled = k.layers.Dot(axes=1, name=f"{HEAD_PREFIX}attention_pool")([weights, flat])
    return _classifier(pooled, num_classes, dropout)


HEADS: dict[str, Callable[[Any, int, float], Any]] = {"linear": linear, "mlp": mlp, "attention": attention}
