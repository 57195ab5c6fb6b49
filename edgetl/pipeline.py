"""tf.data input pipelines: streaming decode from disk, resize, augment, normalize, batch, prefetch.

Only file paths live in memory; images are read and decoded in parallel as batches are consumed,
so memory does not grow with the dataset. JPEG, PNG, BMP and GIF (first frame) decode to RGB:
grayscale is expanded and alpha dropped by `decode_image(channels=3)`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from edgetl.backbones.spec import Preprocessing
from edgetl.tf_env import keras, tf

RESIZE_METHOD = "bilinear"  # no crop, no aspect preservation: what image_dataset_from_directory does


def _as_bytes(paths: Sequence[str]) -> list[bytes]:
    # Bytes, not str: file names that are not valid UTF-8 still reach the file system intact.
    return [os.fsencode(p) for p in paths]


def _decode(path: Any) -> Any:
    t = tf()
    image = t.io.decode_image(t.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def find_unreadable(paths: Sequence[str]) -> dict[str, str]:
    """Decode every file once, in parallel; return {path: reason} for those that fail."""
    t = tf()
    if not paths:
        return {}
    probe = (t.data.Dataset.from_tensor_slices(_as_bytes(paths)).enumerate()
             .map(lambda i, p: (i, t.shape(_decode(p))), num_parallel_calls=t.data.AUTOTUNE, deterministic=False)
             .ignore_errors())
    readable = {int(i) for i, _ in probe.as_numpy_iterator()}
    return {p: _why_unreadable(p) for i, p in enumerate(paths) if i not in readable}


def _why_unreadable(path: str) -> str:
    if not os.path.exists(path):
        return "missing file"
    if os.path.getsize(path) == 0:
        return "empty file"
    try:
        _decode(tf().constant(os.fsencode(path)))
    except Exception as exc:  # TensorFlow's decode errors have no narrower public type
        message = str(getattr(exc, "message", exc)).strip().splitlines()
        return f"cannot decode: {message[0] if message else type(exc).__name__}"
    return "cannot decode"


def augmentation_layers(seed: int, flip: bool) -> Any:
    """Random flip, crop (zoom-in), small rotation, brightness and contrast on 0..255 RGB."""
    layers = keras().layers
    steps = [layers.RandomFlip("horizontal", seed=seed)] if flip else []
    steps += [
        layers.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1),
        layers.RandomZoom(height_factor=(-0.15, 0.0), fill_mode="reflect", seed=seed + 2),
        layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed + 3),
        layers.RandomContrast(0.15, seed=seed + 4),
    ]
    return keras().Sequential(steps, name="augmentation")


def make_dataset(paths: Sequence[str], labels: Sequence[int], *, image_size: int, batch_size: int,
                 preprocessing: Preprocessing, training: bool, seed: int = 0, augment: bool = False,
                 flip: bool = True) -> Any:
    """Batches of (normalized float32 NHWC images, int32 labels)."""
    t = tf()
    mean = t.constant(preprocessing.mean, t.float32)
    std = t.constant(preprocessing.std, t.float32)

    def load(path: Any, label: Any) -> tuple[Any, Any]:
        image = t.image.resize(_decode(path), [image_size, image_size], method=RESIZE_METHOD)
        return image, label

    ds = t.data.Dataset.from_tensor_slices((_as_bytes(paths), t.constant(list(labels), t.int32)))
    if training:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, num_parallel_calls=t.data.AUTOTUNE).batch(batch_size)
    if training and augment:
        augmenter = augmentation_layers(seed, flip)
        ds = ds.map(lambda x, y: (t.clip_by_value(augmenter(x, training=True), 0.0, 255.0), y),
                    num_parallel_calls=t.data.AUTOTUNE)
    ds = ds.map(lambda x, y: ((x - mean) / std, y), num_parallel_calls=t.data.AUTOTUNE)
    return ds.prefetch(t.data.AUTOTUNE)
