"""Which image files belong to which class, and how they split into train and validation.

Pure Python, no TensorFlow: listing an image folder (one sub-folder per class, the layout
`keras.utils.image_dataset_from_directory` reads) or a CSV of `path,label`, and a deterministic
stratified split. Decoding is the pipeline's job (edgetl/pipeline.py).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edgetl.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class DatasetIndex:
    """Images and integer labels; `classes[label]` is the class name."""

    source: str
    format: str  # "folder" | "csv"
    classes: tuple[str, ...]
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    skipped: tuple[Skipped, ...] = ()

    def counts(self) -> dict[str, int]:
        tally = collections.Counter(self.labels)
        return {name: tally.get(i, 0) for i, name in enumerate(self.classes)}

    def subset(self, keep: Iterable[int]) -> "DatasetIndex":
        keep = sorted(keep)
        return dataclasses.replace(self, paths=tuple(self.paths[i] for i in keep),
                                   labels=tuple(self.labels[i] for i in keep))

    def without(self, bad: dict[str, str]) -> "DatasetIndex":
        """Drop unreadable files, recording why."""
        keep = [i for i, p in enumerate(self.paths) if p not in bad]
        skipped = self.skipped + tuple(Skipped(p, r) for p, r in sorted(bad.items()))
        return dataclasses.replace(self.subset(keep), skipped=skipped)

    def fingerprint(self) -> str:
        """sha256 over (path relative to the dataset, label) pairs: which images a split holds,
        independent of where the dataset folder lives."""
        base = self.source if self.format == "folder" else os.path.dirname(self.source)
        digest = hashlib.sha256()
        for path, label in sorted((os.path.relpath(p, base), label) for p, label in zip(self.paths, self.labels)):
            digest.update(os.fsencode(path) + b"\0" + str(label).encode() + b"\n")
        return digest.hexdigest()

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "format": self.format, "images": len(self.paths),
                "class_counts": self.counts(),
                "skipped": [dataclasses.asdict(s) for s in self.skipped]}


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(folder: Path) -> list[str]:
    found = []
    # followlinks=False: a symlinked directory loop cannot make the walk endless.
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        found.extend(os.path.join(root, f) for f in sorted(files) if not _is_hidden(f) and _is_image(f))
    return found


def index_folder(root: Path, classes: tuple[str, ...] | None = None) -> DatasetIndex:
    """One sub-folder per class. With `classes`, labels are numbered by that list (for --val-dir).
    Paths are absolute, so later stages find the same files from any working directory."""
    root = root.absolute()
    if not root.is_dir():
        raise InputError(f"{root}: not a directory; DATA must be a folder with one sub-folder per class, or a CSV")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not _is_hidden(d.name))
    if not found:
        raise InputError(f"{root}: no class sub-folders; put each class's images in DATA/<class>/")
    per_class = {name: _images_under(root / name) for name in found}
    empty = [name for name, files in per_class.items() if not files]
    if empty:
        raise InputError(f"{root}: class folder(s) without images: {', '.join(empty)}; "
                         f"add images ({', '.join(IMAGE_EXTENSIONS)}) or remove the folder(s)")
    if classes is None:
        classes = tuple(found)
    else:
        unknown = [name for name in found if name not in classes]
        if unknown:
            raise InputError(f"{root}: class(es) not in the training data: {', '.join(unknown)}; "
                             f"training classes are {', '.join(classes)}")
    paths, labels = [], []
    for name in found:
        paths.extend(per_class[name])
        labels.extend([classes.index(name)] * len(per_class[name]))
    return DatasetIndex(str(root), "folder", classes, tuple(paths), tuple(labels))


def index_csv(csv_path: Path) -> DatasetIndex:
    """Rows of `path,label` (header optional). Relative paths are relative to the CSV's folder."""
    csv_path = csv_path.absolute()
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.reader(fh) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{csv_path}: cannot read CSV ({exc})") from exc
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    pairs = []
    for number, row in enumerate(rows, start=2):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise InputError(f"{csv_path}: line {number}: expected 'path,label', got {','.join(row)!r}")
        path = Path(row[0].strip())
        pairs.append((str(path if path.is_absolute() else csv_path.parent / path), row[1].strip()))
    if not pairs:
        raise InputError(f"{csv_path}: no rows; expected lines of 'path,label'")
    classes = tuple(sorted({label for _, label in pairs}))
    pairs.sort()
    return DatasetIndex(str(csv_path), "csv", classes, tuple(p for p, _ in pairs),
                        tuple(classes.index(label) for _, label in pairs))


def index_data(data: Path) -> DatasetIndex:
    if not data.exists():
        raise InputError(f"{data}: no such file or directory")
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise InputError(f"{data}: DATA must be a folder with one sub-folder per class, or a .csv of path,label")
        return index_csv(data)
    return index_folder(data)


def check_trainable(index: DatasetIndex, what: str = "DATA") -> None:
    """At least two classes, each with at least one usable image."""
    counts = index.counts()
    if not index.paths:
        raise InputError(f"{index.source}: no usable images in {what}")
    if len(index.classes) < 2:
        raise InputError(f"{index.source}: only one class ({index.classes[0]}); a classifier needs at least two")
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise InputError(f"{index.source}: class(es) without readable images: {', '.join(empty)}")


def stratified_split(index: DatasetIndex, val_fraction: float, seed: int) -> tuple[DatasetIndex, DatasetIndex]:
    """Per class: shuffle with the seed, hold out round(n * fraction) images (at least 1, at most n-1).

    Depends only on the seed and the sorted file list, so the same data always splits the same way.
    A class with a single image stays entirely in training.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    by_class: dict[int, list[int]] = collections.defaultdict(list)
    for i, label in enumerate(index.labels):
        by_class[label].append(i)
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda i: index.paths[i])
        order = rng.permutation(len(members))
        n_val = 0 if len(members) < 2 else min(max(1, round(len(members) * val_fraction)), len(members) - 1)
        val.extend(members[j] for j in order[:n_val])
        train.extend(members[j] for j in order[n_val:])
    return index.subset(train), index.subset(val)
