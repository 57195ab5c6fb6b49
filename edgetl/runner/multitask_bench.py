"""`edgetl bench` of multi-task models (edgetl/training/multitask.py): which tasks the artifacts share, their
probabilities per task, and parity per task with the mean on top (report_render.py draws its table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import UsageError


def artifact_tasks(manifest: Any) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    tasks = manifest.sections.get("tasks")
    return tuple((t["name"], tuple(t["labels"])) for t in tasks) if tasks else None


def refuse_bare(path: Path, info: dict[str, Any]) -> None:
    if len(info["outputs"]) > 1:
        raise UsageError(f"{path}: a model with {len(info['outputs'])} outputs (multi-task); bench its artifact "
                         f"folder or its run, whose manifests name the tasks and their labels")


def bench_tasks(entries: list[Any], data: Path | None) -> Any:
    """The tasks all entries share (None: single-task); mixed or --data are refused."""
    tasks = {entry.tasks for entry in entries}
    if len(tasks) > 1:
        raise UsageError("the models have different tasks; bench the artifacts of one run together")
    shared = tasks.pop()
    if shared and data:
        raise UsageError("--data: not supported for multi-task models (a folder holds one label per image); "
                         "bench uses the run's validation split")
    return shared


def label_array(index: Any) -> np.ndarray:
    return np.asarray(index.task_labels) if index.tasks else np.asarray(index.labels)


def predict(session: Any, images: np.ndarray, tasks: Any, chunk: int | None = None) -> Any:
    """The session's probabilities: one array, or for a multi-task model one array per task."""
    if not tasks:
        if chunk is None:
            return session.predict(images)
        return np.concatenate([session.predict(images[i:i + chunk]) for i in range(0, len(images), chunk)])
    step = chunk or max(1, len(images))
    parts = [session.predict_all(images[i:i + step]) for i in range(0, len(images), step)]
    return [np.concatenate(outputs) for outputs in zip(*parts)]


def parity_of(probabilities: Any, labels: np.ndarray, classes: list[str], reference: Any, tasks: Any) -> dict[str, Any]:
    """parity() for one output; for a multi-task model, per task under `tasks` and their mean on top."""
    from edgetl.runner.parity import parity

    if not tasks:
        return parity(probabilities, labels, classes, reference)
    per_task = {task: parity(probabilities[i], labels[:, i], list(names), None if reference is None else reference[i])
                for i, (task, names) in enumerate(tasks)}
    values = list(per_task.values())

    def mean(key: str) -> float | None:
        found = [v[key] for v in values]
        return None if any(f is None for f in found) else float(np.mean(found))

    def flat(key: str) -> dict[str, Any] | None:
        if any(v[key] is None for v in values):
            return None
        return {f"{task}/{name}": value for task, v in per_task.items() for name, value in v[key].items()}

    return {"images": int(len(labels)), "accuracy": mean("accuracy"), "per_class_accuracy": flat("per_class_accuracy"),
            "accuracy_delta_pts": mean("accuracy_delta_pts"), "top1_agreement": mean("top1_agreement"),
            "mean_abs_prob_diff": mean("mean_abs_prob_diff"), "per_class_delta_pts": flat("per_class_delta_pts"),
            "tasks": per_task, "aggregate": "mean over tasks; the gate holds every task on its own"}
