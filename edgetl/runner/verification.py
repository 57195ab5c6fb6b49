"""Checks every exported file is what was asked for, and agrees with the Keras model it came from.

All problems are collected first, then reported together. Structural checks read the file
(edgetl/artifacts/inspection.py); numeric checks run it in its runtime on real validation images.

Tolerances, per mode, and why:
- none: the same float32 math in another order (fused kernels, XNNPACK/MLAS summation order).
  Softmax outputs lie in [0, 1]; 1e-4 absolute leaves two orders of magnitude above the ~1e-6 such
  reordering gives, yet catches any real graph difference (a wrong op, a missing layer).
- fp16: weights rounded to 11 significant bits: predictions almost never flip; small probability drift.
- int8: every weight and activation on a 256-level grid: a few near-tie predictions may flip.
- dynamic: TFLite's hybrid kernels keep activations float (error close to fp16), but ONNX Runtime's
  dynamic mode quantizes activations too, per tensor at run time: as lossy as int8. One tolerance
  per mode, so dynamic gets int8's.
Agreement is the share of images with the same top-1 class as the Keras model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgetl.artifacts.inspection import ONNX_WEIGHT_OPS, TFLITE_WEIGHT_OPS
from edgetl.converters.base import ExportOptions
from edgetl.converters.onnx_quantize import WEIGHT_PEAK

TOLERANCES: dict[str, dict[str, float]] = {
    "none": {"max_abs_diff": 1e-4},
    "fp16": {"min_agreement": 0.98, "max_mean_abs_diff": 0.01},
    "dynamic": {"min_agreement": 0.90, "max_mean_abs_diff": 0.05},
    "int8": {"min_agreement": 0.90, "max_mean_abs_diff": 0.05},
}
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


def structure_problems(info: dict[str, Any], options: ExportOptions, image_size: int, classes: int,
                       tasks: list[tuple[str, list[str]]] | None = None) -> list[str]:
    """`tasks`: a multi-task model's [(task, class names)]: one output per task, named after it, in order."""
    if info["format"] == "tflite":
        return _tflite_problems(info, options, image_size, classes, tasks)
    return _onnx_problems(info, options, image_size, classes, tasks)


def _io_problems(info: dict[str, Any], input_shape: list[Any], in_dtype: str, output_shape: list[Any],
                 out_dtype: str, tasks: list[tuple[str, list[str]]] | None = None) -> list[str]:
    found = []
    for role, tensors, shape, dtype in (("input", info["inputs"], input_shape, in_dtype),
                                        ("output", info["outputs"], output_shape, out_dtype)):
        if role == "output" and tasks:
            found += output_problems(tensors, tasks, shape[0], dtype)
            continue
        if len(tensors) != 1:
            found.append(f"expected 1 {role}, found {len(tensors)}")
            continue
        if tensors[0]["shape"] != shape:
            found.append(f"{role} {tensors[0]['name']!r} has shape {tensors[0]['shape']}, expected {shape}")
        if tensors[0]["dtype"] != dtype:
            found.append(f"{role} {tensors[0]['name']!r} is {tensors[0]['dtype']}, expected {dtype}")
    return found


def _tflite_problems(info: dict[str, Any], options: ExportOptions, size: int, classes: int,
                     tasks: list[tuple[str, list[str]]] | None = None) -> list[str]:
    io = options.io_dtype
    found = _io_problems(info, [1, size, size, 3], io, [1, classes], io, tasks)
    flex = sorted({op["op"] for op in info["ops"] if op["op"].startswith("Flex")})
    if flex:
        found.append(f"SELECT_TF (Flex) ops need the TensorFlow runtime on device: {', '.join(flex)}")
    weight_ops = [op for op in info["ops"] if op["op"] in TFLITE_WEIGHT_OPS]
    if not weight_ops:
        found.append("no weight-bearing ops found (conv / fully connected)")
    if options.quantize == "int8":
        float_ops = [f"{op['op']} -> {op['outputs'][0]['name']}" for op in info["ops"] if op["op"] not in BOUNDARY_OPS
                     and any(t["dtype"] in ("float32", "float16") for t in op["inputs"] + op["outputs"])
                     and not _in_fallback(op["outputs"][0]["name"], options)]
        if float_ops:
            found.append(f"{len(float_ops)} op(s) still float in an int8 model: {'; '.join(float_ops[:5])}")
    elif options.quantize == "fp16" and "float16" not in info["tensor_dtypes"]:
        found.append("fp16 export holds no float16 weights")
    elif options.quantize == "dynamic" and not any(op["inputs"][1]["dtype"] == "int8" for op in weight_ops):
        # Not every weight: the converter leaves tensors under 1,024 elements float by design.
        found.append("dynamic-range export holds no int8 weights")
    elif options.quantize == "none":
        quantized = {d for d in info["tensor_dtypes"] if d in ("int8", "uint8", "float16")}
        if quantized:
            found.append(f"float export contains {', '.join(sorted(quantized))} tensors")
    if "TFLITE_METADATA" not in info["metadata"]["entries"]:
        found.append("no TFLite metadata (stock clients need normalization options and labels)")
    return found


def _onnx_problems(info: dict[str, Any], options: ExportOptions, size: int, classes: int,
                   tasks: list[tuple[str, list[str]]] | None = None) -> list[str]:
    batch = info["inputs"][0]["shape"][0] if info["inputs"] and info["inputs"][0]["shape"] else None
    if isinstance(batch, int):
        found = [f"input batch dimension is fixed at {batch}; expected dynamic"]
    else:
        found = []
    shape = [batch, 3, size, size] if options.nchw else [batch, size, size, 3]
    found += _io_problems(info, shape, "float", [None if tasks else info["outputs"][0]["shape"][0] if info["outputs"]
                                                 else None, classes], "float", tasks)
    names = ([t["name"] for t in info["inputs"]], [t["name"] for t in info["outputs"]])
    if names[0] != ["image"] or not tasks and names[1] != ["probability"]:  # a multi-task model's: checked above
        found.append(f"input/output names are {names[0]}/{names[1]}, expected ['image']/"
                     f"{[t for t, _ in tasks] if tasks else ['probability']}")
    producers = {out: op for op in info["ops"] for out in op["outputs"]}
    weights = [(op, op["inputs"][1]) for op in info["ops"] if op["op"] in ONNX_WEIGHT_OPS and len(op["inputs"]) > 1]
    if options.quantize == "int8":
        for op, weight in weights:
            if _in_fallback(op["name"], options):
                continue
            source = producers.get(weight)
            dequantized = source is not None and source["op"] == "DequantizeLinear"
            if not (weight in info["initializers"] or (dequantized and source["inputs"][0] in info["initializers"])):
                continue  # activation x activation (e.g. attention pooling's MatMul): no weight to check
            if not (dequantized and info["initializers"].get(source["inputs"][0]) == "int8"):
                found.append(f"{op['op']} {op['name']!r} has float weights in an int8 model")
        if (info.get("int8_peak") or 0) > WEIGHT_PEAK:
            found.append(f"int8 weights reach {info['int8_peak']}: on x86 CPUs without VNNI, ONNX Runtime and "
                         f"OpenVINO add pairs of uint8 x int8 products in int16, which saturates above "
                         f"{WEIGHT_PEAK}; quantize weights to 7 bits (edgetl export does)")
    elif options.quantize == "fp16":
        if "float16" not in info["initializer_dtypes"]:
            found.append("fp16 export holds no float16 weights")
    elif options.quantize == "dynamic":
        if not any(op["op"] in ("ConvInteger", "MatMulInteger") for op in info["ops"]):
            found.append("dynamic export has no dynamically quantized ops")
    elif {"int8", "uint8", "float16"} & set(info["initializer_dtypes"]):
        found.append("float export contains quantized or float16 weights")
    if "labels" not in info["metadata"]:
        found.append("no labels in metadata_props")
    return found[:20]


def _in_fallback(name: str, options: ExportOptions) -> bool:
    """An op the user asked to keep float (selective quantization): float there is expected."""
    return any(f"/{layer}/" in name for layer in options.float_fallback)


def agreement(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Numbers comparing exported outputs with the Keras model's on the same images."""
    diff = np.abs(reference.astype(np.float64) - exported.astype(np.float64))
    same = np.argmax(reference, 1) == np.argmax(exported, 1)
    return {"images": int(len(labels)), "top1_agreement": round(float(np.mean(same)), 4),
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "accuracy": round(float(np.mean(np.argmax(exported, 1) == labels)), 4),
            "reference_accuracy": round(float(np.mean(np.argmax(reference, 1) == labels)), 4)}


def numeric_problems(numbers: dict[str, Any], quantize: str) -> list[str]:
    limits = TOLERANCES[quantize]
    found = []
    if "max_abs_diff" in limits and numbers["max_abs_diff"] > limits["max_abs_diff"]:
        found.append(f"max |difference| from the Keras model {numbers['max_abs_diff']:.2e} > {limits['max_abs_diff']:.0e}")
    if "min_agreement" in limits and numbers["top1_agreement"] < limits["min_agreement"]:
        found.append(f"top-1 agreement with the Keras model {numbers['top1_agreement']:.3f} < {limits['min_agreement']}")
    if "max_mean_abs_diff" in limits and numbers["mean_abs_diff"] > limits["max_mean_abs_diff"]:
        found.append(f"mean |difference| {numbers['mean_abs_diff']:.4f} > {limits['max_mean_abs_diff']}")
    return found


# ------------------------------------------------------------------ multi-task (edgetl/training/multitask.py)

AGGREGATE = "mean over tasks (max for max_abs_diff); every task is checked on its own"


def task_agreement(tasks: list[tuple[str, list[str]]], reference: list[np.ndarray], exported: list[np.ndarray],
                 labels: np.ndarray, quantize: str) -> tuple[dict[str, Any], list[str]]:
    """Agreement of every output with the Keras model's (per task), each held to the mode's tolerances."""
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

