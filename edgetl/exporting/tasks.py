"""What an export of a multi-task run needs (edgetl/training/multitask.py has the whole design): the run's
tasks and classes from its label files, the artifact's label files and manifest section, the TFLite metadata
and ONNX properties that name the tasks, and each validation image's label per task."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgetl.errors import UsageError
from edgetl.network.tasks import labels_file, write_label_files


def run_tasks(run: Any) -> list[tuple[str, list[str]]] | None:
    """[(task, class names)] of a multi-task run, from its (hash-verified) label files; None for one task."""
    tasks = run.manifest.sections.get("tasks")
    if not tasks:
        return None
    return [(t["name"], (run.path / t["labels_file"]).read_text(encoding="utf-8").splitlines()) for t in tasks]


def copy_label_files(run: Any, folder: Path) -> tuple[list[str], dict[str, Any]]:
    """An artifact's label files per task and its manifest `tasks` section (nothing for one task)."""
    tasks = run_tasks(run)
    if not tasks:
        return [], {}
    write_label_files(folder, {"tasks": [{"labels_file": labels_file(t), "classes": c} for t, c in tasks]})
    return [labels_file(t) for t, _ in tasks], {
        "tasks": [{"name": t, "labels": c, "labels_file": labels_file(t)} for t, c in tasks]}


def refuse_compress(run: Any) -> None:
    """`edgetl compress` handles single-task runs only (its recipes train and gate one output)."""
    if run_tasks(run):
        raise UsageError(f"edgetl compress: {run.path} is a multi-task run, which compress does not support yet; "
                         f"use `edgetl export` per format and mode, then `edgetl bench`")


def tflite_metadata_outputs(run: Any) -> list[tuple[str, str, list[str]]] | None:
    """(tensor name, label file, labels) per output for the TFLite Metadata of a multi-task model."""
    return [(task, labels_file(task), classes) for task, classes in run_tasks(run) or []] or None


def describe(run: Any) -> str:
    tasks = run_tasks(run)
    return f"{len(tasks)} tasks ({', '.join(f'{t}: {len(c)} classes' for t, c in tasks)})" if tasks else \
        f"{len(run.labels)} classes"


def onnx_props(run: Any) -> dict[str, str]:
    import json

    return {"tasks": json.dumps(dict(run_tasks(run)))} if run_tasks(run) else {}


def sample_labels(run: Any, paths: Sequence[str]) -> np.ndarray:
    """[images, tasks] labels of `paths` (images of the run's splits)."""
    rows = {}
    for index in run.splits:
        rows.update(zip(index.paths, index.task_labels))
    return np.asarray([rows[p] for p in paths], dtype=np.int64).reshape(len(paths), -1)

