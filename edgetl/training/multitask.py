"""Multi-task classification: one shared backbone, one head per task, trained from a CSV with one column per task.

`edgetl train labels.csv -o RUN --tasks species,color [--task-weights 1,0.5]` reads a CSV whose header
names the columns (`path,species,color`); each task is one label column. The choices, in one place:

- Data (edgetl/data/dataset_index.py): the header is required; each task gets its own sorted class list;
  the stratified train/validation split is made on the first task; the split fingerprints cover every
  label column. Every row needs a label for every task.
- Model: the `--head` kind is built once per task on the shared backbone, its layers named
  `head_<task>_...`, and its output layer named `<task>`: Keras output names, TFLite output tensor
  names (and a `serving_default` signature), ONNX output names and TFLite Metadata output entries all
  carry the task names, in `--tasks` order. Output layers count as head layers (edgetl/network/model.py).
- Training: sparse cross-entropy per output, weighted by `--task-weights` (default 1 each); accuracy
  per task; the best epoch is the one with the best *mean* of the tasks' validation accuracies.
- Run directory: `labels_<task>.txt` for every task, and `labels.txt` = the first task's classes, so
  tools that expect one labels file keep working and see the first task. The manifest's `tasks`
  section lists each task's classes, label file, loss weight and counts; `metrics.tasks` holds each
  task's validation accuracy overall and per class. Top-level `val_accuracy` is the mean over tasks
  and `per_class_accuracy` is keyed `<task>/<class>`.
- Export: per-task verification against the Keras model (each task held to the mode's tolerances);
  the artifact manifest's `metrics.tasks` has each task's numbers, and the top-level numbers are
  their mean (max for `max_abs_diff`). Each artifact ships `labels_<task>.txt` too.
- Bench (edgetl/runner/multitask_bench.py): `parity.tasks` has each task's parity; the top-level parity is
  the mean over tasks, and a gate must hold for every task (edgetl/runner/parity.py).
- Not supported, refused with exit 2: `--head prototype` and `siamese`, `--class-weights balanced`, `--val-dir`,
  `--feature-cache on` (auto leaves the cache off), `bench --data` and bare multi-output files, and
  `edgetl compress` (refuse_compress: its recipes fine-tune and gate a single output).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgetl.errors import InputError
from edgetl.network.tasks import as_list, labels_file

TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
RESERVED = ("image", "path")  # the models' input name; the CSV's path column
RESERVED_PREFIXES = ("head_", "quant_")  # edgetl's head layers; TFMOT's wrappers of them (QAT)


def normalize_options(options: dict[str, Any]) -> dict[str, Any]:
    """`tasks` and `task_weights` as tuples, from comma-separated text (CLI) or sequences (Python API).
    Weights that are not numbers stay text, for problems() to report with everything else."""
    for key in ("tasks", "task_weights"):
        value = options.get(key)
        if value is not None:
            options[key] = tuple(part.strip() for part in value.split(",")) if isinstance(value, str) else tuple(value)
    if options.get("task_weights") is not None:
        try:
            options["task_weights"] = tuple(float(w) for w in options["task_weights"])
        except (TypeError, ValueError):
            options["task_weights"] = ",".join(map(str, options["task_weights"]))
    return options


def config_problems(config: Any) -> list[str]:
    """Every problem of --tasks/--task-weights with the other train options (TrainConfig.problems)."""
    tasks, weights = config.tasks, config.task_weights
    if tasks is None:
        return ["--task-weights: needs --tasks (one weight per task)"] if weights is not None else []
    found = []
    if not tasks or not all(tasks):
        found.append("--tasks: give label columns of the CSV, comma-separated, e.g. --tasks species,color")
    bad = [t for t in tasks if t and (not TASK_NAME.fullmatch(t) or t in RESERVED or t.startswith(RESERVED_PREFIXES))]
    if bad:
        found.append(f"--tasks: {', '.join(map(repr, bad))}: task names become output and file names; use letters, "
                     f"digits and _, starting with a letter (not {' or '.join(RESERVED)}, not starting with "
                     f"{' or '.join(RESERVED_PREFIXES)}); rename the column")
    duplicates = sorted({t for t in tasks if tasks.count(t) > 1})
    if duplicates:
        found.append(f"--tasks: duplicate task(s) {', '.join(duplicates)}")
    if isinstance(weights, str):
        found.append(f"--task-weights: expected comma-separated numbers, got {weights!r}")
    elif weights is not None:
        if len(weights) != len(tasks):
            found.append(f"--task-weights: {len(weights)} weight(s) for {len(tasks)} task(s); give one per task, "
                         f"in --tasks order")
        if not all(math.isfinite(w) and w > 0 for w in weights):
            found.append(f"--task-weights: every weight must be a positive number, got {', '.join(map(str, weights))}")
    found += _data_problems(Path(config.data), tasks)
    if config.head in ("prototype", "siamese"):
        found.append(f"--head {config.head}: not supported with --tasks (prototypes are single-task); "
                     "use linear, mlp or attention")
    if config.class_weights != "none":
        found.append(f"--class-weights {config.class_weights}: not supported with --tasks; the tasks' losses are "
                     f"weighted with --task-weights")
    if config.val_dir is not None:
        found.append("--val-dir: not supported with --tasks (a folder holds one label per image); use --val-split")
    if config.feature_cache == "on":
        found.append("--feature-cache on: not supported with --tasks (the cache holds one label per image); "
                     "use auto or off")
    return found


def _data_problems(data: Path, tasks: Sequence[str]) -> list[str]:
    if data.is_dir():
        return [f"--tasks: needs a CSV DATA whose header names one column per task (path,{','.join(tasks)}); "
                f"{data} is a folder"]
    if not data.is_file() or data.suffix.lower() != ".csv":
        return []  # reading DATA says what is wrong with it
    from edgetl.data.dataset_index import csv_header

    try:
        header = csv_header(data)
    except InputError:
        return []
    columns = [c for c in header if c.lower() != "path"]
    if len(columns) == len(header):
        return [f"--tasks: {data}: the first line must be a header with a 'path' column and one column per task, "
                f"got {','.join(header)!r}"]
    unknown = [t for t in tasks if t and t not in columns]
    return [f"--tasks: unknown column(s) {', '.join(unknown)}; {data} has {', '.join(columns)}"] if unknown else []


def loss_weights(config: Any) -> dict[str, float] | None:
    if not config.tasks:
        return None
    return dict(zip(config.tasks, config.task_weights or (1.0,) * len(config.tasks)))


def class_counts(index: Any) -> list[tuple[str, int]] | None:
    """[(task, number of classes)] of a multi-task index, None for a single-task one."""
    return [(t, len(c)) for t, c in zip(index.tasks, index.task_classes)] if index.tasks else None


def dataset_labels(index: Any) -> Sequence[Any]:
    """What make_dataset takes as labels: one int per image, or one row of ints (a label per task)."""
    return index.task_labels if index.tasks else index.labels


def split_labels(dataset: Any, tasks: Sequence[str]) -> Any:
    """Batches of (images, [batch, tasks] labels) -> (images, {task: [batch] labels}), as Keras maps outputs."""
    if not tasks:
        return dataset
    from edgetl.tf_env import tf

    t = tf()
    return dataset.map(lambda x, y: (x, {task: y[:, i] for i, task in enumerate(tasks)}),
                       num_parallel_calls=t.data.AUTOTUNE).prefetch(t.data.AUTOTUNE)


def validation(results: dict[str, float], tasks: Sequence[str], logs: dict[str, Any] | None) -> tuple[float, float, dict[str, float]]:
    """(val_loss, val_accuracy, extra logs) from evaluate(return_dict=True); for several outputs the
    accuracy is the mean of the tasks', and the logs get each task's and the mean training accuracy."""
    if "accuracy" in results:
        return float(results["loss"]), float(results["accuracy"]), {}
    per_task = [float(results[f"{task}_accuracy"]) for task in tasks]
    extra = {f"val_{task}_accuracy": value for task, value in zip(tasks, per_task)}
    if logs and all(f"{task}_accuracy" in logs for task in tasks):
        extra["accuracy"] = float(np.mean([logs[f"{task}_accuracy"] for task in tasks]))
    return float(results["loss"]), float(np.mean(per_task)), extra


def evaluate(model: Any, val_ds: Any, index: Any, best_epoch: int) -> dict[str, Any]:
    """The run's metrics: per task, validation accuracy overall and per class; their mean on top."""
    from edgetl.runner.parity import accuracy_by_class

    truth: list[list[np.ndarray]] = [[] for _ in index.tasks]
    predicted: list[list[np.ndarray]] = [[] for _ in index.tasks]
    for images, labels in val_ds:
        for i, output in enumerate(as_list(model(images, training=False))):
            predicted[i].append(np.argmax(output.numpy(), axis=1))
            truth[i].append(labels[index.tasks[i]].numpy())
    tasks = {}
    for i, (task, classes) in enumerate(zip(index.tasks, index.task_classes)):
        y, p = np.concatenate(truth[i]), np.concatenate(predicted[i])
        per_class = accuracy_by_class(p, y, list(classes))
        tasks[task] = {"val_accuracy": round(float(np.mean(p == y)), 4),
                       "per_class_accuracy": {k: None if v is None else round(v, 4) for k, v in per_class.items()}}
    mean = float(np.mean([np.mean(np.concatenate(predicted[i]) == np.concatenate(truth[i])) for i in range(len(tasks))]))
    return {"val_accuracy": round(mean, 4), "val_images": int(sum(len(b) for b in truth[0])), "best_epoch": best_epoch,
            "per_class_accuracy": {f"{task}/{name}": accuracy for task, numbers in tasks.items()
                                   for name, accuracy in numbers["per_class_accuracy"].items()},
            "tasks": tasks, "aggregate": "val_accuracy is the mean of the tasks' validation accuracies"}


def run_sections(config: Any, full: Any, train: Any, val: Any) -> dict[str, Any]:
    """The run manifest's `tasks` section ({} for a single-task run)."""
    if not full.tasks:
        return {}
    weights = loss_weights(config) or {}
    train_counts, val_counts = train.task_counts(), val.task_counts()
    return {"tasks": [{"name": task, "classes": list(classes), "labels_file": labels_file(task),
                       "loss_weight": weights[task], "train_counts": train_counts[task],
                       "val_counts": val_counts[task]} for task, classes in zip(full.tasks, full.task_classes)]}

