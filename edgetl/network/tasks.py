"""The structure of a multi-task network (edgetl/training/multitask.py has the whole design): one head per
task on the shared backbone, each output named after its task, in `--tasks` order, in Keras, TFLite and ONNX,
and each task's label file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from edgetl.errors import InputError, UsageError


def labels_file(task: str) -> str:
    return f"labels_{task}.txt"


def write_label_files(folder: Path, sections: dict[str, Any]) -> list[str]:
    """labels_<task>.txt for every task of a run's manifest sections; their names ([] for a single task)."""
    names = []
    for task in sections.get("tasks", []):
        (folder / task["labels_file"]).write_text("".join(f"{name}\n" for name in task["classes"]), encoding="utf-8")
        names.append(task["labels_file"])
    return names


def task_model(base: Any, tasks: list[tuple[str, int]], head: str, dropout: float, name: str) -> Any:
    """One `head` per task on the backbone `base`: layers `head_<task>_...`, the output layer named `<task>`."""
    from edgetl.network.heads import HEAD_PREFIX, HEADS
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
    from edgetl.network.heads import HEAD_PREFIX

    names = list(model.output_names)
    single = len(names) == 1 and names[0].removeprefix("quant_").startswith(HEAD_PREFIX)  # QAT wraps as quant_*
    return None if single else names


def as_list(outputs: Any) -> list[Any]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


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

