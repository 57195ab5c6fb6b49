"""The feature cache: the frozen phase on cached features learns what it learns on images, and an
entry is reused exactly when nothing that decides the features changed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import edgetl
from edgetl.errors import UsageError
from tests.conftest import TINY, write_image_folder

# One full-batch step with no dropout: the update does not depend on the order of images, so the
# head trained on cached features must equal the head trained on images up to float rounding.
ONE_STEP = TINY | {"epochs": 1, "batch_size": 64, "dropout": 0.0}


def _head_weights(run: Path) -> list[np.ndarray]:
    from edgetl.network.model import load_model

    model = load_model(run / "model.keras")
    return [w for layer in model.layers if layer.name.startswith("head_") for w in layer.get_weights()]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("fc") / "data", classes=3, per_class=12)


@pytest.mark.parametrize("head", ["linear", "attention"])
def test_cached_head_learns_what_the_image_path_learns(run, data, tmp_path, head) -> None:
    options = ONE_STEP | {"weights": str(run), "head": head}
    cached = edgetl.train(str(data), str(tmp_path / "cached"), **options | {"feature_cache": "on"})
    plain = edgetl.train(str(data), str(tmp_path / "plain"), **options | {"feature_cache": "off"})
    assert cached.sections["feature_cache"]["used"] and not plain.sections["feature_cache"]["used"]
    a, b = _head_weights(tmp_path / "cached"), _head_weights(tmp_path / "plain")
    assert len(a) == len(b) >= 2
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=2e-5)
    assert cached.metrics["val_accuracy"] == plain.metrics["val_accuracy"]


def test_cache_key_follows_data_backbone_and_size(run, tmp_path) -> None:
    data = write_image_folder(tmp_path / "data", classes=2, per_class=8)
    options = TINY | {"weights": str(run), "feature_cache": "on"}

    def train(name: str, **changes) -> dict:
        return edgetl.train(str(data), str(tmp_path / name), **options | changes).sections["feature_cache"]

    first = train("a")
    assert (first["train_hit"], first["val_hit"]) == (False, False)
    again = train("b")
    assert (again["train_hit"], again["val_hit"]) == (True, True) and again["entries"] == first["entries"]
    assert train("c", head="mlp")["train_hit"]  # same cut point (pooled features): same entry
    assert not train("d", image_size=40)["train_hit"]
    assert not train("e", weights=str(_nudged_copy(run, tmp_path / "nudged.keras")))["train_hit"]  # other weights
    image = sorted((data / "class_0").iterdir())[0]
    image.write_bytes(image.read_bytes())  # same pixels, new modification time: the stamp changes
    os.utime(image, ns=(1, 1))
    changed = train("f")
    assert not changed["train_hit"] or not changed["val_hit"]
    assert changed["entries"] != first["entries"]


def test_the_weight_penalty_reaches_the_cached_head(run, data, tmp_path) -> None:
    """--regularizer is part of the full model's loss; on cached features the head trains alone and must
    carry it too: cached and image paths agree, and differ from the unpenalized head."""
    options = ONE_STEP | {"weights": str(run), "epochs": 3, "regularizer": "l2", "regularizer_strength": 1.0}
    cached = edgetl.train(str(data), str(tmp_path / "cached"), **options | {"feature_cache": "on"})
    edgetl.train(str(data), str(tmp_path / "plain"), **options | {"feature_cache": "off"})
    edgetl.train(str(data), str(tmp_path / "free"), **options | {"feature_cache": "on", "regularizer": "none"})
    assert cached.sections["feature_cache"]["used"]
    a, b, free = (_head_weights(tmp_path / name) for name in ("cached", "plain", "free"))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=2e-5)
    assert np.sum(np.square(a[0])) < np.sum(np.square(free[0]))


def _nudged_copy(run: Path, target: Path) -> Path:
    """The run's model with one backbone layer's weights scaled by 1.01: other backbone weights."""
    from edgetl.network.model import backbone_layers, load_model

    model = load_model(run / "model.keras")
    layer = next(layer for layer in backbone_layers(model) if layer.weights)
    layer.set_weights([w * 1.01 for w in layer.get_weights()])
    model.save(str(target))
    return target


def test_damaged_entry_is_rebuilt(run, tmp_path) -> None:
    from edgetl.training.feature_cache import cache_root

    data = write_image_folder(tmp_path / "data", classes=2, per_class=8)
    options = TINY | {"weights": str(run), "feature_cache": "on"}
    first = edgetl.train(str(data), str(tmp_path / "a"), **options).sections["feature_cache"]
    features = cache_root() / first["entries"][0] / "features.npy"
    features.write_bytes(features.read_bytes()[:100])  # truncated
    again = edgetl.train(str(data), str(tmp_path / "b"), **options).sections["feature_cache"]
    assert not again["train_hit"] and again["val_hit"]
    assert np.load(features, mmap_mode="r").shape[0] > 0


def test_streamed_split_matches_in_memory(tmp_path, monkeypatch) -> None:
    from edgetl.training import feature_cache

    features = np.random.default_rng(0).normal(size=(37, 5)).astype(np.float32)
    labels = np.arange(37, dtype=np.int32) % 3
    np.save(tmp_path / "f.npy", features)
    split = feature_cache.CachedSplit(np.load(tmp_path / "f.npy", mmap_mode="r"), labels, tmp_path, True, 0.0)
    monkeypatch.setattr(feature_cache, "IN_MEMORY_BYTES", 0)
    rows = [(x.numpy(), y.numpy()) for x, y in split.dataset(8, training=True, seed=1)]
    assert [len(y) for _, y in rows] == [8, 8, 8, 8, 5]
    seen = np.concatenate([x for x, _ in rows])
    got_labels = np.concatenate([y for _, y in rows])
    order = np.lexsort(seen.T[::-1])
    np.testing.assert_array_equal(seen[order], features[np.lexsort(features.T[::-1])])
    index = {tuple(row): i for i, row in enumerate(features)}
    assert all(labels[index[tuple(x)]] == y for x, y in zip(seen, got_labels))


def test_augmentation_is_for_fine_tuning_and_the_head_phase_stays_cached(run, data, tmp_path) -> None:
    """--augment no longer rules the cache out: the frozen phase trains on the images as they are (cached), the
    fine-tuning phase on augmented images."""
    options = TINY | {"weights": str(run), "augment": True, "fine_tune_epochs": 1}
    manifest = edgetl.train(str(data), str(tmp_path / "out"), **options | {"feature_cache": "on"})
    assert manifest.sections["feature_cache"]["used"]
    assert [h["phase"] for h in manifest.sections["history"]] == ["head", "fine-tune"]


def test_cache_on_from_scratch_is_refused(tmp_path) -> None:
    with pytest.raises(UsageError, match="--feature-cache on.*--weights none.*whole network trains"):
        edgetl.train(str(tmp_path), str(tmp_path / "out"), **TINY | {"feature_cache": "on"})
