"""Multi-task classification: one shared backbone, one head per task, trained from a CSV with one column per task.

`edgetl train labels.csv -o RUN --tasks species,color [--task-weights 1,0.5]` reads a CSV whose header
names the columns (`path,species,color`); each task is one label column. The choices, in one place:

- Data (edgetl/dataset_index.py): the header is required; each task gets its own sorted class list;
  the stratified train/validation split is made on the first task; the split fingerprints cover every
  label column. Every row needs a label for every task.
- Model: the `--head` kind is built once per task on the shared backbone, its layers named
  `head_<task>_...`, and its output layer named `<task>`: Keras output names, TFLite output tensor
  names (and a `serving_default` signature), ONNX output names and TFLite Metadata output entries all
  carry the task names, in `--tasks` order. Output layers count as head layers (edgetl/model.py).
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
- Bench (edgetl/multitask_bench.py): `parity.tasks` has each task's parity; the top-level parity is
  the mean over tasks, and a gate must hold for every task (edgetl/parity.py).
- Not supported, refused with exit 2: `--head prototype`, `--class-weights balanced`, `--val-dir`,
  `--feature-cache on` (auto leaves the cache off), `bench --data` and bare multi-output files, and
  `edgetl compress` (refuse_compress: its recipes fine-tune and gate a single output).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgetl.errors import InputError, UsageError

TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
RESERVED = ("image", "path")  # the models' input name; the CSV's path column
RESERVED_PREFIXES = ("head_", "quant_")  # edgetl's head layers; TFMOT's wrappers of them (QAT)
AGGREGATE = "mean over tasks (max for max_abs_diff); every task is checked on its own"


def labels_file(task: str) -> str:
    return f"labels_{task}.txt"


# --------------------------------------------------------------------------------------------- options

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
    if config.head == "prototype":
        found.append("--head prototype: not supported with --tasks (prototypes are single-task); "
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
    from edgetl.dataset_index import csv_header

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


# ----------------------------------------------------------------------------------------- data, model

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


def task_model(base: Any, tasks: list[tuple[str, int]], head: str, dropout: float, name: str) -> Any:
    """One `head` per task on the backbone `base`: layers `head_<task>_...`, the output layer named `<task>`."""
    from edgetl.heads import HEAD_PREFIX, HEADS
    from edgetl.tf_env import keras

    clash = [task for task, _ in tasks if task in {layer.name for layer in base.layers}]
    if clash:
        raise UsageError(f"--tasks: {', '.join(clash)} is the name of a backbone layer; rename the column")
    outputs = [HEADS[head](base.output, count, dropout, prefix=f"{HEAD_PREFIX}{task}_", output=task)
               for task, count in tasks]
    try:
        return keras().Model(base.input, outputs[0] if len(outputs) == 1 else outputs, name=name)
    except ValueError as exc:  # two tasks whose head layer names collide (tf_keras: "... is used 2 times ...")
        raise UsageError(f"--tasks: {', '.join(t for t, _ in tasks)}: {str(exc).splitlines()[0]}; "
                         f"rename a column") from None


def task_outputs(model: Any) -> list[str] | None:
    """A multi-task model's output names (its tasks, in order); None for a single-task model."""
    from edgetl.heads import HEAD_PREFIX

    names = list(model.output_names)
    single = len(names) == 1 and names[0].removeprefix("quant_").startswith(HEAD_PREFIX)  # QAT wraps as quant_*
    return None if single else names


def as_list(outputs: Any) -> list[Any]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


# -------------------------------------------------------------------------------------------- training

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
    from edgetl.parity import accuracy_by_class

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


def write_label_files(folder: Path, sections: dict[str, Any]) -> list[str]:
    """labels_<task>.txt for every task of a run's manifest sections; their names ([] for a single task)."""
    names = []
    for task in sections.get("tasks", []):
        (folder / task["labels_file"]).write_text("".join(f"{name}\n" for name in task["classes"]), encoding="utf-8")
        names.append(task["labels_file"])
    return names


# ------------------------------------------------------------------------------------- export, verify

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


def verification(tasks: list[tuple[str, list[str]]], reference: list[np.ndarray], exported: list[np.ndarray],
                 labels: np.ndarray, quantize: str) -> tuple[dict[str, Any], list[str]]:
    """Agreement of every output with the Keras model's (per task), each held to the mode's tolerances."""
    from edgetl.verification import agreement, numeric_problems

    per_task, problems = {}, []
    reference = reference if isinstance(reference, list) else [reference]  # one task: one array
    if len(exported) != len(tasks):
        problems.append(f"the file gives {len(exported)} output(s) for {len(tasks)} task(s)")
    for i, ((task, _), ours) in enumerate(zip(tasks, exported)):
        if ours.shape != reference[i].shape:
            problems.append(f"task {task}: output shape {list(ours.shape)} differs from the Keras model's "
                            f"{list(reference[i].shape)}")
            continue
        per_task[task] = agreement(reference[i], ours, labels[:, i])
        problems += [f"task {task}: {p}" for p in numeric_problems(per_task[task], quantize)]
    values = list(per_task.values())

    def mean(key: str, digits: int | None = 4) -> float | None:
        value = float(np.mean([v[key] for v in values])) if values else None
        return value if value is None or digits is None else round(value, digits)

    numbers = {"images": int(len(labels)), "top1_agreement": mean("top1_agreement"),
               "max_abs_diff": max((v["max_abs_diff"] for v in values), default=None),
               "mean_abs_diff": mean("mean_abs_diff", None), "accuracy": mean("accuracy"),
               "reference_accuracy": mean("reference_accuracy"), "tasks": per_task, "aggregate": AGGREGATE}
    return numbers, problems


def output_problems(tensors: list[dict[str, Any]], tasks: list[tuple[str, list[str]]], batch: int | None,
                    dtype: str) -> list[str]:
    """One output per task, named after it, in task order, [batch, classes] (batch None: dynamic)."""
    names, expected = [t["name"] for t in tensors], [task for task, _ in tasks]
    found = [] if names == expected else [f"outputs are {names}, expected one per task, in order: {expected}"]
    for tensor, (_, classes) in zip(tensors, tasks):
        shape = tensor["shape"]
        batch_ok = shape[:1] == [batch] if batch is not None else bool(shape) and not isinstance(shape[0], int)
        if not batch_ok or shape[1:] != [len(classes)]:
            found.append(f"output {tensor['name']!r} has shape {shape}, expected [{batch or 'N'}, {len(classes)}]")
        if tensor["dtype"] != dtype:
            found.append(f"output {tensor['name']!r} is {tensor['dtype']}, expected {dtype}")
    return found


def name_tflite_outputs(flatbuffer: bytes, tasks: Sequence[str]) -> bytes:
    """Name the output tensors (in task order, as converted) after the tasks, and add a `serving_default`
    signature mapping `image` and every task name to its tensor."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph = tree.subgraphs[0]
    if len(graph.outputs) != len(tasks):
        raise InputError(f"TFLite conversion gave {len(graph.outputs)} outputs for {len(tasks)} tasks")

    def tensor_map(name: str, index: int) -> Any:
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, int(index)
        return entry

    for task, index in zip(tasks, graph.outputs):
        graph.tensors[index].name = task
    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = "serving_default", 0
    signature.inputs = [tensor_map("image", graph.inputs[0])]
    signature.outputs = [tensor_map(task, index) for task, index in zip(tasks, graph.outputs)]
    tree.signatureDefs = [signature]
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
