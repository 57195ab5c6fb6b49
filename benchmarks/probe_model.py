"""The suite's labelled models: a backbone with a linear head fit on real labelled images, so every
int8 file (edgetl's and the peers') has an accuracy and a drop against the float model.

Images: scikit-learn's handwritten digits (1,797 real 8x8 scans, 10 classes), upscaled to the input
size, grey in all three channels, in [-1, 1]; split once by a fixed seed into a training part (the
head's fit and the calibration images) and a held-out validation part (every accuracy).
Backbone weights: EfficientNet-Lite0 gets its real ImageNet weights (installed offline with
edgetl[imagenet]); MobileNetV2/V3 get random weights with realistic activation ranges
(benchmarks/int8_speed.py), as their Keras ImageNet files need the network. The head is a
multinomial logistic regression on the pooled features (scikit-learn), written into the Dense layer:
a linear probe, so accuracy comes from the backbone's features and nothing is trained for long.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CALIBRATION_IMAGES = 200  # edgetl's default calibration size
VALIDATION_IMAGES = 400
TRAINING_IMAGES = 600  # of the remaining 1,397: enough for the probe, and Keras feature extraction is slow


@dataclass(frozen=True)
class Digits:
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray

    @property
    def calibration(self) -> np.ndarray:
        return self.train_images[:CALIBRATION_IMAGES]


def labelled_digits(size: int, seed: int = 0) -> Digits:
    from sklearn.datasets import load_digits

    from edgetl.tf_env import tf

    digits = load_digits()
    scans = (digits.images / 16.0 * 2.0 - 1.0).astype(np.float32)[..., None]  # 0..16 ink -> [-1, 1]
    images = tf().image.resize(scans, (size, size), method="bilinear").numpy()
    images = np.repeat(images, 3, axis=-1)
    order = np.random.default_rng(seed).permutation(len(images))
    val, train = order[:VALIDATION_IMAGES], order[VALIDATION_IMAGES:VALIDATION_IMAGES + TRAINING_IMAGES]
    labels = digits.target.astype(np.int64)
    return Digits(images[train], labels[train], images[val], labels[val])


def probe_classifier(name: str, size: int, data: Digits) -> tuple[Any, float]:
    """The backbone + a linear head fit on data's training part; returns it and its training accuracy
    (the validation accuracy is measured on the exported float files, like every other file's)."""
    from sklearn.linear_model import LogisticRegression

    from benchmarks.int8_speed import randomize_realistically
    from edgetl.backbones import get_backbone
    from edgetl.network.heads import HEAD_PREFIX
    from edgetl.network.model import build_classifier
    from edgetl.tf_env import keras

    imagenet = name == "efficientnet_lite0"
    model = build_classifier(get_backbone(name), size, 1.0, 10, imagenet=imagenet, dropout=0.0)
    if not imagenet:
        randomize_realistically(model)
    pooled = keras().Model(model.input, model.get_layer(f"{HEAD_PREFIX}pool").output)
    train = pooled.predict(data.train_images, batch_size=32, verbose=0)
    scale = float(np.std(train)) or 1.0  # fit on standardised features, then fold the scale into the kernel
    probe = LogisticRegression(C=0.1, max_iter=2000).fit(train / scale, data.train_labels)
    dense = model.layers[-1]
    dense.set_weights([(probe.coef_.T / scale).astype(np.float32), probe.intercept_.astype(np.float32)])
    return model, float(probe.score(train / scale, data.train_labels))
