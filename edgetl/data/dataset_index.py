"""Which image files belong to which class, and how they split into train and validation.

Pure Python, no TensorFlow: listing an image folder (one sub-folder per class, the layout
`keras.utils.image_dataset_from_directory` reads) or a CSV of `path,label` — or, for multi-task
training (`--tasks`, edgetl/training/multitask.py), a CSV whose header names a `path` column and one label
column per task — and a deterministic stratified split. Decoding is the pipeline's job (edgetl/data/pipeline.py).

Folder rules: hidden files and folders (leading '.', e.g. .DS_Store, ._foo.jpg) are ignored silently;
folders nested inside a class folder are read recursively; symlinked folders are not followed (so a
link loop cannot hang the walk) and, like files without an image extension, are listed as skipped.
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

from edgetl.errors import InputError, UsageError

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
    # A multi-task CSV (--tasks): the tasks, each task's sorted classes, and per image one label per task.
    # `classes` and `labels` are then the first task's (the split is stratified on it).
    tasks: tuple[str, ...] = ()
    task_classes: tuple[tuple[str, ...], ...] = ()
    task_labels: tuple[tuple[int, ...], ...] = ()

    def counts(self) -> dict[str, int]:
        tally = collections.Counter(self.labels)
        return {name: tally.get(i, 0) for i, name in enumerate(self.classes)}

    def task_counts(self) -> dict[str, dict[str, int]]:
        """Per task of a multi-task index, images per class ({} for a single-task index)."""
        tallies = [collections.Counter(column) for column in zip(*self.task_labels)] or [collections.Counter()] * len(self.tasks)
        return {task: {name: tally.get(i, 0) for i, name in enumerate(classes)}
                for task, classes, tally in zip(self.tasks, self.task_classes, tallies)}

    def subset(self, keep: Iterable[int]) -> "DatasetIndex":
        keep = sorted(keep)
        return dataclasses.replace(self, paths=tuple(self.paths[i] for i in keep),
                                   labels=tuple(self.labels[i] for i in keep),
                                   task_labels=tuple(self.task_labels[i] for i in keep) if self.tasks else ())

    def without(self, bad: dict[str, str]) -> "DatasetIndex":
        """Drop unreadable files, recording why."""
        keep = [i for i, p in enumerate(self.paths) if p not in bad]
        known = {s.path for s in self.skipped}
        skipped = self.skipped + tuple(Skipped(p, r) for p, r in sorted(bad.items()) if p not in known)
        return dataclasses.replace(self.subset(keep), skipped=skipped)

    def fingerprint(self) -> str:
        """sha256 over (path relative to the dataset, label) pairs: which images a split holds,
        independent of where the dataset folder lives."""
        base = self.source if self.format == "folder" else os.path.dirname(self.source)
        digest = hashlib.sha256()
        labels: Iterable[Any] = self.labels
        if self.tasks:  # every label column counts
            digest.update(",".join(self.tasks).encode() + b"\n")
            labels = (",".join(map(str, row)) for row in self.task_labels)
        for path, label in sorted((os.path.relpath(p, base), label) for p, label in zip(self.paths, labels)):
            digest.update(os.fsencode(path) + b"\0" + str(label).encode() + b"\n")
        return digest.hexdigest()

    def content_digest(self) -> str:
        """sha256 over (path relative to the dataset, label, sha256 of the file's bytes): the same for a copy
        of the images anywhere, whatever its modification times; any edited image changes it. Reads every file."""
        base = self.source if self.format == "folder" else os.path.dirname(self.source)
        digest = hashlib.sha256()
        for path, label in sorted((p, label) for p, label in zip(self.paths, self.labels)):
            try:
                with open(path, "rb") as f:
                    content = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError:
                content = "unreadable"
            digest.update(os.fsencode(os.path.relpath(path, base)) + b"\0" + f"{label} {content}\n".encode())
        return digest.hexdigest()

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "format": self.format, "images": len(self.paths),
                "class_counts": self.counts(),
                "skipped": [dataclasses.asdict(s) for s in self.skipped]}


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _label_problem(name: str) -> str | None:
    """Class names go into labels.txt (one per line) and model metadata: UTF-8, no control characters."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    # splitlines() knows every line break a reader of labels.txt might split on (\x85, \u2028 too).
    if name.splitlines() != [name] or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a line break or control character"
    return None


def _images_under(folder: Path) -> tuple[list[str], list[Skipped]]:
    found, skipped = [], []

    def unlistable(exc: OSError) -> None:
        skipped.append(Skipped(str(exc.filename), f"cannot list folder: {exc.strerror or exc}"))

    # followlinks=False: a symlinked directory loop cannot make the walk endless.
    for root, dirs, files in os.walk(folder, onerror=unlistable, followlinks=False):
        visible = sorted(d for d in dirs if not _is_hidden(d))
        skipped.extend(Skipped(os.path.join(root, d), "symbolic link to a folder: not followed")
                       for d in visible if os.path.islink(os.path.join(root, d)))
        dirs[:] = visible
        for name in sorted(f for f in files if not _is_hidden(f)):
            if _is_image(name):
                found.append(os.path.join(root, name))
            else:
                skipped.append(Skipped(os.path.join(root, name),
                                       f"not an image file name (expected {', '.join(IMAGE_EXTENSIONS)})"))
    return found, skipped


def index_folder(root: Path, classes: tuple[str, ...] | None = None) -> DatasetIndex:
    """One sub-folder per class. With `classes`, labels are numbered by that list (for --val-dir).
    Paths are absolute, so later stages find the same files from any working directory."""
    root = root.absolute()
    if not root.is_dir():
        raise InputError(f"{root}: not a directory; DATA must be a folder with one sub-folder per class, or a CSV")
    try:
        entries = sorted((d for d in root.iterdir() if d.is_dir() and not _is_hidden(d.name)), key=lambda d: d.name)
    except OSError as exc:
        raise InputError(f"{root}: cannot list the folder ({exc.strerror or exc})") from None
    skipped = [Skipped(str(d), "symbolic link to a folder: not followed") for d in entries if d.is_symlink()]
    found = [d.name for d in entries if not d.is_symlink()]
    if not found:
        raise InputError(f"{root}: no class sub-folders; put each class's images in DATA/<class>/")
    for name in found:
        problem = _label_problem(name)
        if problem:
            raise InputError(f"{root}: class folder name {name!r} {problem}; rename the folder")
    walked = {name: _images_under(root / name) for name in found}
    per_class = {name: files for name, (files, _) in walked.items()}
    for _, class_skipped in walked.values():
        skipped.extend(class_skipped)
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
    return DatasetIndex(str(root), "folder", classes, tuple(paths), tuple(labels), tuple(skipped))


def _csv_rows(csv_path: Path, keep_header: bool = False) -> list[tuple[int, list[str]]]:
    """Non-blank rows with the line each ends on; a leading 'path,label' header is dropped unless `keep_header`."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{csv_path}: cannot read CSV ({exc})") from exc
    if not keep_header and rows and [c.strip().lower() for c in rows[0][1][:2]] == ["path", "label"]:
        rows = rows[1:]
    return rows


def csv_header(csv_path: Path) -> list[str]:
    """The stripped cells of a CSV's first non-blank line."""
    rows = _csv_rows(csv_path, keep_header=True)
    return [cell.strip() for cell in rows[0][1]] if rows else []


def _task_columns(csv_path: Path, header: list[str], tasks: tuple[str, ...]) -> tuple[int, ...]:
    """Column numbers of the path and of each task, from a multi-task CSV's header."""
    lowered = [cell.lower() for cell in header]
    missing = [t for t in tasks if t not in header]
    if "path" not in lowered or missing:
        raise UsageError(f"--tasks: {csv_path}: the header must name a 'path' column and every task "
                         f"({', '.join(tasks)}); it is {','.join(header)!r}")
    return (lowered.index("path"), *(header.index(t) for t in tasks))


def index_csv(csv_path: Path, allow_outside_root: bool = False, tasks: tuple[str, ...] | None = None) -> DatasetIndex:
    """Rows of `path,label` (header optional). Relative paths are relative to the CSV's folder, and no
    path may lead outside that folder (after `..` and symlinks) unless `allow_outside_root`.
    With `tasks`: a header naming a `path` column and each task's column; every row labels every task."""
    csv_path = csv_path.absolute()
    root = os.path.realpath(csv_path.parent)
    rows = _csv_rows(csv_path, keep_header=bool(tasks))
    columns: tuple[int, ...] = (0, 1)
    expected = "'path,label'"
    if tasks:
        columns = _task_columns(csv_path, [c.strip() for c in rows[0][1]] if rows else [], tasks)
        rows, expected = rows[1:], f"a path and a label for each of {', '.join(tasks)}"
    pairs = []
    for line, row in rows:
        where = f"{csv_path}: line {line}"
        cells = [row[c].strip() if c < len(row) else "" for c in columns]
        if len(row) < 2 or not all(cells):
            raise InputError(f"{where}: expected {expected}, got {','.join(row)!r}")
        text, label = cells[0], (cells[1] if not tasks else tuple(cells[1:]))
        if "\0" in text:
            raise InputError(f"{where}: the path contains a NUL character")
        for value in (label,) if not tasks else label:
            problem = _label_problem(value)
            if problem:
                raise InputError(f"{where}: label {value!r} {problem}")
        path = Path(text) if Path(text).is_absolute() else csv_path.parent / text
        real = os.path.realpath(path)
        if not allow_outside_root and os.path.commonpath([root, real]) != root:
            raise UsageError(f"{where}: {text!r} resolves to {real}, outside the CSV's folder {root}; "
                             f"move the images under it, or pass --allow-outside-root")
        pairs.append((str(path), label))
    if not pairs:
        raise InputError(f"{csv_path}: no rows; expected lines of {expected}")
    if tasks:
        return _multitask_index(csv_path, tasks, pairs)
    classes = tuple(sorted({label for _, label in pairs}))
    pairs.sort()
    return DatasetIndex(str(csv_path), "csv", classes, tuple(p for p, _ in pairs),
                        tuple(classes.index(label) for _, label in pairs))


def _multitask_index(csv_path: Path, tasks: tuple[str, ...], pairs: list[Any]) -> DatasetIndex:
    task_classes = tuple(tuple(sorted({labels[i] for _, labels in pairs})) for i in range(len(tasks)))
    lookup = [{name: i for i, name in enumerate(classes)} for classes in task_classes]
    pairs.sort()
    task_labels = tuple(tuple(lookup[i][value] for i, value in enumerate(labels)) for _, labels in pairs)
    return DatasetIndex(str(csv_path), "csv", task_classes[0], tuple(p for p, _ in pairs),
                        tuple(row[0] for row in task_labels), tasks=tasks, task_classes=task_classes,
                        task_labels=task_labels)


def index_data(data: Path, allow_outside_root: bool = False, tasks: tuple[str, ...] | None = None) -> DatasetIndex:
    if not data.exists():
        raise InputError(f"{data}: no such file or directory")
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise InputError(f"{data}: DATA must be a folder with one sub-folder per class, or a .csv of path,label")
        return index_csv(data, allow_outside_root, tasks)
    if tasks:
        raise UsageError(f"--tasks: needs a CSV DATA with one column per task; {data} is a folder")
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
    for task, task_counts in list(index.task_counts().items())[1:]:  # a multi-task CSV: the other tasks too
        if len(task_counts) < 2:
            raise InputError(f"{index.source}: task {task} has only one class ({', '.join(task_counts)}); "
                             f"a classifier needs at least two")
        empty = [name for name, n in task_counts.items() if n == 0]
        if empty:
            raise InputError(f"{index.source}: task {task}: class(es) without readable images: {', '.join(empty)}")


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
