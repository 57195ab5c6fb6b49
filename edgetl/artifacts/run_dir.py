"""A finished training run, as later stages see it: its verified manifest, model, labels and data.

The training and validation splits are rebuilt from the recorded data path, seed and split options,
and checked against the fingerprints the manifest recorded, so calibration and verification use
exactly the images training used (or fail clearly if the data changed since).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.artifacts.manifest import MANIFEST_NAME, Manifest, read_manifest, sha256_of
from edgetl.artifacts.staging import recover_missing
from edgetl.backbones.spec import Preprocessing
from edgetl.data import dataset_index as dsi
from edgetl.errors import InputError
from edgetl.network.model import LABELS_FILE, MODEL_FILE


@dataclasses.dataclass(frozen=True)
class Run:
    path: Path
    manifest: Manifest

    @classmethod
    def open(cls, path: Path | str) -> "Run":
        path = Path(path)
        recover_missing(path)
        if not path.is_dir():
            raise InputError(f"{path}: not a run directory (expected the -o folder of `edgetl train`)")
        manifest = read_manifest(path)  # verifies every file's sha256
        if manifest.kind != "run":
            raise InputError(f"{path}: is an edgetl {manifest.kind}, not a training run")
        return cls(path, manifest)

    @property
    def labels(self) -> list[str]:
        return (self.path / LABELS_FILE).read_text(encoding="utf-8").splitlines()

    @property
    def image_size(self) -> int:
        return int(self.manifest.sections["backbone"]["image_size"])

    @property
    def preprocessing(self) -> Preprocessing:
        contract = self.manifest.sections["backbone"]["preprocessing"]
        return Preprocessing(mean=tuple(contract["mean"]), std=tuple(contract["std"]))

    def reference(self) -> dict[str, Any]:
        """How an artifact names its parent: path and manifest hash."""
        return {"path": str(self.path.resolve()), "manifest_sha256": sha256_of(self.path / MANIFEST_NAME)}

    @functools.cached_property
    def model(self) -> Any:
        from edgetl.network.model import load_model

        return load_model(self.path / MODEL_FILE)

    @functools.cached_property
    def splits(self) -> tuple[dsi.DatasetIndex, dsi.DatasetIndex]:
        options, dataset = self.manifest.options, self.manifest.sections["dataset"]
        data = Path(options["data"])
        skipped = {entry["path"]: entry["reason"] for entry in dataset["skipped"]}
        tasks = tuple(options["tasks"]) if options.get("tasks") else None  # multi-task: every label column
        full = dsi.index_data(data, bool(options.get("allow_outside_root")), tasks).without(skipped)
        if options.get("val_dir"):
            train = full
            val = dsi.index_folder(Path(options["val_dir"]), classes=full.classes).without(skipped)
        else:
            train, val = dsi.stratified_split(full, options["val_split"], options["seed"])
        for name, index in (("train", train), ("val", val)):
            if index.fingerprint() != dataset[f"{name}_fingerprint"]:
                raise InputError(f"{data}: the {name} images differ from those the run {self.path} was trained on; "
                                 f"restore the data or pass --data explicitly")
        return train, val

    def sample(self, split: str, count: int, seed: int = 0) -> tuple[list[str], list[int]]:
        """Up to `count` images stratified by class (round-robin over classes, seeded shuffle within)."""
        index = self.splits[0] if split == "train" else self.splits[1]
        return stratified_sample(index, count, seed)


def stratified_sample(index: dsi.DatasetIndex, count: int, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(index.labels):
        by_class.setdefault(label, []).append(i)
    queues = [list(rng.permutation(members)) for _, members in sorted(by_class.items())]
    chosen: list[int] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(int(queue.pop(0)))
    return [index.paths[i] for i in chosen], [index.labels[i] for i in chosen]


def load_images(paths: list[str], image_size: int, preprocessing: Preprocessing) -> np.ndarray:
    """Decode, resize and normalize exactly as training did; one float32 NHWC array."""
    from edgetl.data.pipeline import make_dataset

    if not paths:
        return np.zeros((0, image_size, image_size, 3), np.float32)
    ds = make_dataset(paths, [0] * len(paths), image_size=image_size, batch_size=64,
                      preprocessing=preprocessing, training=False)
    return np.concatenate([images.numpy() for images, _ in ds])
