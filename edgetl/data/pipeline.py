"""tf.data input pipelines: streaming decode from disk, resize, augment, normalize, batch, prefetch.

Only file paths live in memory; images are read and decoded in parallel as batches are consumed,
so memory does not grow with the dataset. JPEG (accurate integer IDCT, as Pillow and phone decoders),
PNG, BMP and GIF (first frame) decode to RGB:
grayscale is expanded and alpha dropped by `decode_image(channels=3)`; 16-bit PNGs are scaled to 8 bits.
A JPEG's EXIF orientation is applied, as photo viewers do. Before anything is decoded, each header is
read (Pillow's lazy open) and images over MAX_IMAGE_PIXELS are refused: a small file can claim a huge
canvas, and decoding it would allocate gigabytes.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any, Sequence

from edgetl.backbones.spec import Preprocessing
from edgetl.errors import InputError
from edgetl.progress import say
from edgetl.tf_env import keras, tf

RESIZE_METHOD = "bilinear"  # no crop, no aspect preservation: what image_dataset_from_directory does
# Pillow's own warning threshold: about 256 MiB once decoded to RGB. The one place this limit lives.
MAX_IMAGE_PIXELS = 89_478_485
EXIF_ORIENTATION = 0x0112


def _as_bytes(paths: Sequence[str]) -> list[bytes]:
    # Bytes, not str: file names that are not valid UTF-8 still reach the file system intact.
    return [os.fsencode(p) for p in paths]


def _decode(path: Any, orient: bool = True) -> Any:
    t = tf()
    contents = t.io.read_file(path)
    # JPEGs with the accurate integer IDCT: what Pillow, Android and iOS decoders produce. TensorFlow's
    # default (fast) IDCT differs by ~1 level per pixel, enough to flip a deployed model's top-1.
    image = t.cond(t.io.is_jpeg(contents),
                   lambda: t.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
                   lambda: t.io.decode_image(contents, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    if not orient:
        return image
    orientation = t.cond(t.io.is_jpeg(contents),
                         lambda: t.reshape(t.py_function(_exif_orientation, [contents], t.int32), []),
                         lambda: t.constant(1, t.int32))
    return _apply_orientation(image, orientation)


def _exif_orientation(contents: Any) -> int:
    """The EXIF orientation tag (1..8) of an encoded JPEG, 1 when absent or unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(contents.numpy()), formats=["JPEG"]) as image:
            value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # any malformed header: the pixels decode as stored
        return 1
    return value if value in range(1, 9) else 1


def _apply_orientation(image: Any, orientation: Any) -> Any:
    """Turn stored pixels upright for EXIF orientations 1..8 (the transforms of PIL's ImageOps.exif_transpose)."""
    t = tf()

    def transpose(x: Any) -> Any:
        return t.transpose(x, [1, 0, 2])

    branches = [
        lambda: image,
        lambda: t.image.flip_left_right(image),
        lambda: t.image.rot90(image, 2),
        lambda: t.image.flip_up_down(image),
        lambda: transpose(image),
        lambda: t.image.rot90(image, 3),  # tf's rot90 turns counter-clockwise; 6 needs 90° clockwise
        lambda: t.image.rot90(transpose(image), 2),
        lambda: t.image.rot90(image, 1),
    ]
    oriented = t.switch_case(orientation - 1, branches)
    oriented.set_shape([None, None, 3])
    return oriented


def decode_file(path: str) -> Any:
    """One image as the pipeline sees it before resizing: uint8 RGB, upright (a numpy array)."""
    return _decode(tf().constant(os.fsencode(path))).numpy()


def header_problem(path: str) -> str | None:
    """Why a file must not be decoded, from its header alone (no pixels are read), or None."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError as exc:  # Pillow refuses past twice its own limit, before we can look
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(claimed.group(1)):,} pixels" if claimed else "too many pixels"
        return f"image too large: header claims {pixels}, over the {MAX_IMAGE_PIXELS:,}-pixel limit; not decoded"
    except Exception:  # not something Pillow reads: TensorFlow's decode decides
        return None
    if width * height > MAX_IMAGE_PIXELS:
        return (f"image too large: header claims {width}x{height} = {width * height:,} pixels, over the "
                f"{MAX_IMAGE_PIXELS:,}-pixel limit; not decoded")
    return None


def check_images(paths: Sequence[str], on_bad_image: str = "skip") -> dict[str, str]:
    """The image check every command that reads a user's images runs (train, bench --data): each file's
    header, then one decode. Returns {path: reason} of the bad ones, each listed on stderr as skipped;
    with on_bad_image="fail", raises InputError naming up to five of them instead."""
    say(f"checking {len(paths)} images ...")
    bad = find_unreadable(paths)
    if bad and on_bad_image == "fail":
        listed = "; ".join(f"{p}: {r}" for p, r in sorted(bad.items())[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise InputError(f"{len(bad)} unreadable image(s): {listed}{more}; fix or remove them, "
                         "or pass --on-bad-image skip")
    for path, reason in sorted(bad.items()):
        say(f"skipped {path}: {reason}")
    return bad


def find_unreadable(paths: Sequence[str]) -> dict[str, str]:
    """Check every header, then decode every file once, in parallel; return {path: reason} for those that fail."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():  # MAX_IMAGE_PIXELS is our limit, checked below Pillow's
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        bad = {p: why for p in paths if (why := header_problem(p))}
    candidates = [p for p in paths if p not in bad]
    if not candidates:
        return bad
    t = tf()
    probe = (t.data.Dataset.from_tensor_slices(_as_bytes(candidates)).enumerate()
             .map(lambda i, p: (i, t.shape(_decode(p, orient=False))), num_parallel_calls=t.data.AUTOTUNE,
                  deterministic=False)
             .ignore_errors())
    readable = {int(i) for i, _ in probe.as_numpy_iterator()}
    bad.update({p: _why_unreadable(p) for i, p in enumerate(candidates) if i not in readable})
    return bad


def _why_unreadable(path: str) -> str:
    if os.path.islink(path) and not os.path.exists(path):
        return "broken symbolic link"
    if not os.path.exists(path):
        return "missing file"
    if os.path.getsize(path) == 0:
        return "empty file"
    try:
        _decode(tf().constant(os.fsencode(path)), orient=False)
    except Exception as exc:  # TensorFlow's decode errors have no narrower public type
        return f"cannot decode: {_clean_tf_message(str(getattr(exc, 'message', exc)))}"
    return "cannot decode"


def _clean_tf_message(message: str) -> str:
    """'{{function_node ...}} Invalid JPEG data. [Op:DecodeImage] name:' -> 'Invalid JPEG data.'"""
    lines = message.strip().splitlines()
    text = re.sub(r"^\{\{[^}]*\}\}\s*", "", lines[0] if lines else "")
    text = re.sub(r"\s*\[Op:\w+\].*$", "", text).strip()
    return text or "unknown error"


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


def load_resized(path: Any, image_size: int) -> Any:
    """One image file (a bytes path tensor) as 0..255 float32 RGB, resized as training resizes."""
    return tf().image.resize(_decode(path), [image_size, image_size], method=RESIZE_METHOD)


def path_tensor(paths: Sequence[str]) -> Any:
    return tf().constant(_as_bytes(paths))


def make_dataset(paths: Sequence[str], labels: Sequence[int], *, image_size: int, batch_size: int,
                 preprocessing: Preprocessing, training: bool, seed: int = 0, augment: bool = False,
                 flip: bool = True) -> Any:
    """Batches of (normalized float32 NHWC images, int32 labels)."""
    t = tf()
    mean = t.constant(preprocessing.mean, t.float32)
    std = t.constant(preprocessing.std, t.float32)

    def load(path: Any, label: Any) -> tuple[Any, Any]:
        return load_resized(path, image_size), label

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
