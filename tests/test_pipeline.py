"""Decoding, resizing, normalizing and augmenting real image files through tf.data."""

from __future__ import annotations

import numpy as np
from PIL import Image

from edgetl.backbones.spec import MINUS_ONE_TO_ONE
from edgetl.data.pipeline import find_unreadable, make_dataset
from tests.conftest import class_image


def _write_formats(folder):
    """One file per supported format and colour mode; returns paths."""
    base = class_image(0, 0, size=24)
    paths = []
    for name, image, kwargs in [
        ("rgb.jpg", base, {"quality": 95}),
        ("rgb.png", base, {}),
        ("rgb.bmp", base, {}),
        ("palette.gif", base.convert("P"), {}),
        ("gray.png", base.convert("L"), {}),
        ("gray.jpg", base.convert("L"), {}),
        ("rgba.png", base.convert("RGBA"), {}),
    ]:
        path = folder / name
        image.save(path, **kwargs)
        paths.append(str(path))
    return paths


def test_every_format_decodes_to_normalized_rgb_at_the_requested_size(tmp_path):
    paths = _write_formats(tmp_path)
    assert find_unreadable(paths) == {}
    ds = make_dataset(paths, list(range(len(paths))), image_size=32, batch_size=len(paths),
                      preprocessing=MINUS_ONE_TO_ONE, training=False)
    images, labels = next(iter(ds))
    assert images.shape == (len(paths), 32, 32, 3) and images.dtype.name == "float32"
    assert labels.numpy().tolist() == list(range(len(paths)))
    assert -1.0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 1.0
    # The same picture in every format: the centre pixel is the class colour (220, 40, 40) everywhere but
    # in the grayscale files, where all three channels are equal.
    centre = images.numpy()[:, 16, 16, :] * 127.5 + 127.5
    for path, pixel in zip(paths, centre):
        if "gray" in path:
            assert np.ptp(pixel) < 1.0, path
        else:
            assert np.allclose(pixel, (220, 40, 40), atol=12), (path, pixel)


def test_unreadable_files_are_found_with_a_reason(tmp_path):
    good = tmp_path / "good.png"
    class_image(1, 0).save(good)
    truncated = tmp_path / "truncated.jpg"
    class_image(1, 1, size=64).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:300])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a jpeg")
    paths = [str(good), str(truncated), str(tmp_path / "empty.png"), str(tmp_path / "text.jpg"),
             str(tmp_path / "missing.png")]
    bad = find_unreadable(paths)
    assert set(bad) == set(paths[1:])
    assert bad[str(tmp_path / "empty.png")] == "empty file"
    assert bad[str(tmp_path / "missing.png")] == "missing file"
    assert bad[str(tmp_path / "text.jpg")].startswith("cannot decode")


def test_non_utf8_and_space_file_names_are_read(tmp_path):
    import os

    name = os.fsdecode(b"caf\xe9 photo.png")  # Latin-1 bytes: not valid UTF-8
    path = tmp_path / name
    class_image(0, 0).save(path)
    assert find_unreadable([str(path)]) == {}
    ds = make_dataset([str(path)], [0], image_size=32, batch_size=1, preprocessing=MINUS_ONE_TO_ONE, training=False)
    assert next(iter(ds))[0].shape == (1, 32, 32, 3)


def test_augmentation_changes_pixels_but_not_shapes_or_labels(tmp_path):
    paths = []
    for i in range(8):
        path = tmp_path / f"{i}.png"
        class_image(i % 2, i).save(path)
        paths.append(str(path))
    labels = [i % 2 for i in range(8)]
    common = dict(image_size=32, batch_size=8, preprocessing=MINUS_ONE_TO_ONE, seed=1)
    plain = make_dataset(paths, labels, training=False, **common)
    augmented = make_dataset(paths, labels, training=True, augment=True, **common)
    x_plain, _ = next(iter(plain))
    x_aug, y_aug = next(iter(augmented))
    assert x_aug.shape == x_plain.shape
    assert sorted(y_aug.numpy().tolist()) == sorted(labels)
    assert float(np.abs(np.sort(x_aug.numpy().ravel()) - np.sort(x_plain.numpy().ravel())).mean()) > 1e-3
    assert -1.0 <= float(x_aug.numpy().min()) and float(x_aug.numpy().max()) <= 1.0


def test_training_order_is_shuffled_per_epoch_but_reproducible(tmp_path):
    paths = []
    for i in range(16):
        path = tmp_path / f"{i:02d}.png"
        Image.new("RGB", (8, 8), (i * 10, 0, 0)).save(path)
        paths.append(str(path))

    def epochs(seed):
        ds = make_dataset(paths, list(range(16)), image_size=8, batch_size=16, preprocessing=MINUS_ONE_TO_ONE,
                          training=True, seed=seed)
        return [next(iter(ds))[1].numpy().tolist() for _ in range(2)]

    first = epochs(5)
    assert first[0] != first[1], "each epoch should see a new order"
    assert sorted(first[0]) == list(range(16))
    assert epochs(5) == first
