"""Backbone features computed once, so the frozen-backbone phase trains only the head.

While the backbone is frozen (BatchNorm in inference mode) and images are not augmented, every epoch
would push the same images through the same backbone to the same features. Here they are computed
once, at the head's *cache point* (after global pooling for the linear and mlp heads, the spatial
map for attention), written to disk as `.npy` files and read back memory-mapped: the head then
trains on them alone. The cached head is a sub-model sharing the full model's head layers, so
training it trains the full model.

An entry is keyed by sha256 of everything that decides the features: the backbone's weights
themselves, the image size and preprocessing, the cut point, the images (paths and labels) and
their sizes and modification times. Anything changed is a new key; an entry never goes stale. Entries
are written to a temporary folder and renamed into place with `meta.json` last, so a half-written
entry is never read. They live under `$EDGETL_CACHE/features` (default `~/.cache/edgetl/features`);
delete the folder to reclaim the space.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgetl.artifacts.resume import data_stamp
from edgetl.progress import say
from edgetl.tf_env import keras, tf

FORMAT = 1
META = "meta.json"
IN_MEMORY_BYTES = 512 * 2**20  # smaller caches are read into memory; larger ones stream from disk


def cache_root() -> Path:
    return Path(os.environ.get("EDGETL_CACHE", Path.home() / ".cache" / "edgetl")) / "features"


@dataclasses.dataclass(frozen=True)
class CachedSplit:
    features: np.ndarray  # memory-mapped (or in memory), float32 [images, *feature_shape]
    labels: np.ndarray
    path: Path
    hit: bool
    seconds: float

    def dataset(self, batch_size: int, training: bool, seed: int) -> Any:
        """Batches of (features, labels); shuffled every epoch when training."""
        t = tf()
        count = len(self.labels)
        if self.features.nbytes <= IN_MEMORY_BYTES:
            ds = t.data.Dataset.from_tensor_slices((np.asarray(self.features), self.labels))
            if training:
                ds = ds.shuffle(count, seed=seed, reshuffle_each_iteration=True)
            return ds.batch(batch_size).prefetch(t.data.AUTOTUNE)
        return self._streamed(batch_size, training, seed)

    def _streamed(self, batch_size: int, training: bool, seed: int) -> Any:
        t = tf()
        features, labels = self.features, self.labels

        def gather(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            order = np.sort(indices)  # ascending reads from the memory map; order within a batch is irrelevant
            return np.asarray(features[order], np.float32), labels[order].astype(np.int32)

        def load(indices: Any) -> tuple[Any, Any]:
            x, y = t.numpy_function(gather, [indices], [t.float32, t.int32])
            x.set_shape([None, *features.shape[1:]])
            y.set_shape([None])
            return x, y

        ds = t.data.Dataset.range(len(labels))
        if training:
            ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).map(load, num_parallel_calls=t.data.AUTOTUNE).prefetch(t.data.AUTOTUNE)


def cut_tensor(model: Any, cache_after: str | None) -> Any:
    """The tensor the cache holds: the output of layer `cache_after`, or the backbone's output."""
    from edgetl.network.heads import HEAD_PREFIX

    if cache_after:
        return model.get_layer(cache_after).output
    first_head = next(layer for layer in model.layers if layer.name.startswith(HEAD_PREFIX))
    return first_head.input


def head_model(model: Any, cut: Any) -> Any:
    """The head alone, from the cut to the outputs, sharing the full model's layers and weights."""
    return keras().Model(cut, model.outputs, name=f"{model.name}_head")


def weights_digest(extractor: Any) -> str:
    digest = hashlib.sha256()
    for weight in extractor.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{weight.name} {value.dtype} {value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def cache_key(identity: dict[str, Any], paths: Sequence[str]) -> str:
    stamped = identity | {"format": FORMAT, "data_stamp": data_stamp(list(paths)), "tf": tf().__version__}
    return hashlib.sha256(json.dumps(stamped, sort_keys=True).encode()).hexdigest()


def cached_split(extractor: Any, identity: dict[str, Any], paths: Sequence[str], labels: Sequence[int],
                 images: Any, name: str) -> CachedSplit:
    """The split's features from the cache, computing and storing them first on a miss.

    `identity` must name everything but the images that decides the features (weights digest, image
    size, preprocessing, cut); `images` is the split's un-augmented, unshuffled dataset of (images, labels).
    """
    import time

    key = cache_key(identity | {"fingerprint": _fingerprint(paths, labels)}, paths)
    entry = cache_root() / key
    loaded = _load(entry, len(labels))
    if loaded is not None:
        say(f"feature cache: {name} features of {len(labels)} images from {entry}")
        return CachedSplit(*loaded, entry, True, 0.0)
    started = time.perf_counter()
    _build(entry, extractor, images, len(labels), identity)
    seconds = round(time.perf_counter() - started, 2)
    loaded = _load(entry, len(labels))
    if loaded is None:
        raise RuntimeError(f"feature cache: {entry} was written but cannot be read back")
    features, stored = loaded
    say(f"feature cache: computed {name} features of {len(labels)} images once ({seconds:.1f}s) -> {entry}")
    return CachedSplit(features, stored, entry, False, seconds)


def _fingerprint(paths: Sequence[str], labels: Sequence[int]) -> str:
    digest = hashlib.sha256()
    for path, label in zip(paths, labels):  # in order: the cached rows follow it
        digest.update(os.fsencode(path) + b"\0" + str(label).encode() + b"\n")
    return digest.hexdigest()


def _load(entry: Path, count: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The entry's arrays (features memory-mapped), or None when absent, incomplete or damaged."""
    try:
        meta = json.loads((entry / META).read_text(encoding="utf-8"))
        features = np.load(entry / "features.npy", mmap_mode="r")
        labels = np.load(entry / "labels.npy")
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT or len(features) != count or len(labels) != count or \
            list(features.shape[1:]) != meta.get("feature_shape"):
        return None
    return features, labels


def _build(entry: Path, extractor: Any, images: Any, count: int, identity: dict[str, Any]) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name[:12]}.", dir=entry.parent))
    try:
        shape = tuple(int(d) for d in extractor.output.shape[1:])
        features = np.lib.format.open_memmap(staging / "features.npy", mode="w+", dtype=np.float32,
                                             shape=(count, *shape))
        labels = np.empty(count, np.int32)
        row = 0
        for batch, batch_labels in images:
            out = extractor.predict_on_batch(batch)  # Keras' compiled predict step, traced once per extractor
            features[row:row + len(out)] = out
            labels[row:row + len(out)] = batch_labels.numpy()
            row += len(out)
        if row != count:
            raise RuntimeError(f"feature cache: expected {count} images, the dataset gave {row}")
        features.flush()
        del features
        np.save(staging / "labels.npy", labels)
        meta = {"format": FORMAT, "feature_shape": list(shape), "images": count, "identity": identity}
        (staging / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if entry.exists():  # a damaged entry under the same key (a complete one was loaded above)
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(staging, entry)
        except OSError:
            if _load(entry, count) is None:  # not another process that finished the same entry first
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
