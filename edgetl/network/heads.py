"""Classification heads on the backbone's feature map. Adding one is a function and a registry line.

- `linear`: global average pooling, dropout, softmax classifier (feature extraction's classic head).
- `mlp`: global average pooling, a 256-unit ReLU layer, dropout, softmax classifier.
- `attention`: attention pooling instead of the average: a 1x1 convolution scores every spatial
  position, a softmax over positions turns the scores into weights, and the features are their
  weighted sum, so the head can look at where the object is. Plain layers only (CONV_2D, RESHAPE,
  SOFTMAX, BATCH_MATMUL in TFLite), so it exports, quantizes and runs on the same runtimes.
- `prototype`: few-shot classification (edgetl/training/prototypes.py). A 128-d unit-length embedding, and
  classes as unit-length prototypes scored by cosine similarity (times a fixed scale, then softmax).
  Trained with the normalized-softmax metric loss (cross-entropy over scaled cosines, NormFace /
  proxy-based); after training each prototype becomes the mean normalized embedding of its class's
  training images, so `edgetl enroll` adds a class from a few images exactly as training made them.
- `siamese`: one-shot verification (edgetl/training/siamese.py). The prototype head's layers (embedding,
  cosine to class means, so everything after training treats both alike), trained as Koch et al.'s twin
  network instead: two images through the same layers, sigmoid(w . |a - b| + b) says "same class", binary
  cross-entropy on balanced same/different pairs drawn anew every epoch.
Every layer is named with HEAD_PREFIX so later stages can tell the head from the backbone.
"""

from __future__ import annotations

from typing import Any, Callable

from edgetl.tf_env import keras

HEAD_PREFIX = "head_"
MLP_UNITS = 256
EMBEDDING_DIM = 128
EMBEDDING_LAYER = f"{HEAD_PREFIX}embedding_norm"  # the prototype head's unit-length embedding
PROTOTYPE_LAYER = f"{HEAD_PREFIX}prototypes"  # its kernel: one unit-length column per class
COSINE_SCALE = 16.0  # cosine in [-1, 1] times this: logits sharp enough for softmax (NormFace's s)


def _classifier(x: Any, num_classes: int, dropout: float, prefix: str = HEAD_PREFIX, output: str | None = None) -> Any:
    k = keras()
    x = k.layers.Dropout(dropout, name=f"{prefix}dropout")(x)
    return k.layers.Dense(num_classes, activation="softmax", name=output or f"{prefix}probs")(x)


# `prefix` and `output` (the output layer's name) let a multi-task model build one head per task
# (edgetl/training/multitask.py): layers head_<task>_..., output layer <task>.


def linear(features: Any, num_classes: int, dropout: float, prefix: str = HEAD_PREFIX, output: str | None = None) -> Any:
    x = keras().layers.GlobalAveragePooling2D(name=f"{prefix}pool")(features)
    return _classifier(x, num_classes, dropout, prefix, output)


def mlp(features: Any, num_classes: int, dropout: float, prefix: str = HEAD_PREFIX, output: str | None = None) -> Any:
    k = keras()
    x = k.layers.GlobalAveragePooling2D(name=f"{prefix}pool")(features)
    x = k.layers.Dense(MLP_UNITS, activation="relu", name=f"{prefix}hidden")(x)
    return _classifier(x, num_classes, dropout, prefix, output)


def attention(features: Any, num_classes: int, dropout: float, prefix: str = HEAD_PREFIX,
              output: str | None = None) -> Any:
    k = keras()
    height, width, channels = features.shape[1:]
    positions = height * width
    scores = k.layers.Conv2D(1, 1, name=f"{prefix}attention_scores")(features)
    scores = k.layers.Reshape((positions,), name=f"{prefix}attention_flat")(scores)
    weights = k.layers.Softmax(name=f"{prefix}attention_weights")(scores)
    flat = k.layers.Reshape((positions, channels), name=f"{prefix}attention_features")(features)
    pooled = k.layers.Dot(axes=1, name=f"{prefix}attention_pool")([weights, flat])
    return _classifier(pooled, num_classes, dropout, prefix, output)


def prototype(features: Any, num_classes: int, dropout: float) -> Any:
    """Few-shot head: unit-length embeddings scored by cosine against one unit-length prototype per class."""
    k = keras()
    x = k.layers.GlobalAveragePooling2D(name=f"{HEAD_PREFIX}pool")(features)
    x = k.layers.Dropout(dropout, name=f"{HEAD_PREFIX}dropout")(x)
    x = k.layers.Dense(EMBEDDING_DIM, name=f"{HEAD_PREFIX}embedding")(x)
    x = k.layers.UnitNormalization(name=EMBEDDING_LAYER)(x)
    return cosine_classifier(x, num_classes)


def siamese(features: Any, num_classes: int, dropout: float) -> Any:
    """The prototype head's layers; training differs (pairs), see edgetl/training/siamese.py."""
    return prototype(features, num_classes, dropout)


def cosine_classifier(embedding: Any, num_classes: int) -> Any:
    """softmax(COSINE_SCALE * cosine(embedding, prototype_c)): a bias-free Dense whose kernel columns
    are kept unit-length (in training by a constraint; afterwards they are the class prototypes)."""
    k = keras()
    scores = k.layers.Dense(num_classes, use_bias=False, kernel_constraint=k.constraints.UnitNorm(axis=0),
                            name=PROTOTYPE_LAYER)(embedding)
    scores = k.layers.Rescaling(COSINE_SCALE, name=f"{HEAD_PREFIX}scale")(scores)
    return k.layers.Softmax(name=f"{HEAD_PREFIX}probs")(scores)


def embedding_model(model: Any) -> Any:
    """Image in, the model's embedding out, sharing its layers: the unit-length embedding of the prototype
    and siamese heads, else the pooled backbone features (the average-pooling head layer, or a global
    average pool of the backbone's output)."""
    k = keras()
    names = {layer.name for layer in model.layers}
    if EMBEDDING_LAYER in names:
        output = model.get_layer(EMBEDDING_LAYER).output
    elif f"{HEAD_PREFIX}pool" in names:
        output = model.get_layer(f"{HEAD_PREFIX}pool").output
    else:
        last_backbone = [layer for layer in model.layers if not layer.name.startswith(HEAD_PREFIX)][-1]
        output = k.layers.GlobalAveragePooling2D(name="embedding_pool")(last_backbone.output)
    return k.Model(model.input, output, name=f"{model.name}_embedding")


HEADS: dict[str, Callable[[Any, int, float], Any]] = {"linear": linear, "mlp": mlp, "attention": attention,
                                                      "prototype": prototype, "siamese": siamese}
EMBEDDING_HEADS = ("prototype", "siamese")  # a unit-length embedding and a prototype table

# Where the feature cache cuts each head (edgetl/training/feature_cache.py): after the last layer that has no
# weights, so the cache is as small as it can be; None caches the backbone's spatial feature map.
CACHE_AFTER: dict[str, str | None] = {"linear": f"{HEAD_PREFIX}pool", "mlp": f"{HEAD_PREFIX}pool", "attention": None,
                                      "prototype": f"{HEAD_PREFIX}pool", "siamese": f"{HEAD_PREFIX}pool"}
