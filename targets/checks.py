"""Does an exported file fit a target? Static checks of an inspected model against a TargetProfile.

Each check reads `inspection.inspect_model`'s description of the file, so it runs without the
device and without running the model. Every problem names what is wrong (the op, the tensor, the
number) so the user knows what to change; an empty list means the file passes.

int8 rule (for profiles with int8_required, e.g. the Edge TPU and TFLite Micro): inside the graph,
every activation must be 8-bit integer (int32/int64/bool index and shape values are allowed) and no
constant may be floating point. At the graph boundary:
- io_dtype "float32": float inputs/outputs are fine, so a QUANTIZE right after the input and a
  DEQUANTIZE right before the output are too; any other float tensor is not;
- io_dtype "int8"/"uint8": the inputs/outputs must be that dtype (reported by the I/O check);
- io_dtype unset: the inputs/outputs must be int8 or uint8.
For ONNX files inspect_model gives no per-op dtypes, so the int8 check looks at the graph I/O and at
the weights (initializers) of Conv/MatMul/Gemm ops.
"""

from __future__ import annotations

import collections
from typing import Any

from edgetl.artifacts.inspection import FLOAT_DTYPES, ONNX_WEIGHT_OPS
from edgetl.targets.memory import canonical_dtype, estimate_peak_ram
from edgetl.targets.profiles import TargetProfile

EIGHT_BIT = {"int8", "uint8"}
INDEX_DTYPES = {"int32", "int64", "bool"}  # shape/axis/argmax values, not quantized data
NAMED = 5  # how many offending tensors a message names


def check_artifact(profile: TargetProfile, info: dict[str, Any], peak_ram: dict[str, Any] | None = None,
                   tflm: dict[str, Any] | None = None) -> list[str]:
    """Problems running the inspected file `info` on `profile`'s target; [] = it fits.

    `peak_ram` is `memory.estimate_peak_ram(info)`; it is computed here when the profile has a RAM
    budget and none is given. `tflm` is `tflm.facts(path)` for a TensorFlow Lite Micro profile when
    TFLM is installed: then a kernel TFLM lacks is a problem, and the RAM budget is held against the
    arena TFLM really needs instead of the estimate.
    """
    if info["format"] not in profile.formats:  # the op and dtype rules below are for the profile's formats
        return [f"format {info['format']} is not one {profile.name} runs (it takes {', '.join(profile.formats)}); "
                "other checks skipped"]
    tflm = tflm if profile.runtime == "tflm" else None
    problems = [tflm["load_problem"]] if tflm and tflm["load_problem"] else []
    problems += _check_ops(profile, info)
    problems += _check_io(profile, info)
    if profile.int8_required:
        problems += _check_int8(profile, info)
    if profile.max_model_bytes is not None and info["bytes"] > profile.max_model_bytes:
        problems.append(f"model file is {info['bytes']:,} bytes, over {profile.name}'s limit of "
                        f"{profile.max_model_bytes:,} bytes")
    if profile.max_ram_bytes is not None and tflm and tflm["arena_bytes"]:
        if tflm["arena_bytes"] > profile.max_ram_bytes:
            problems.append(f"TFLM's tensor arena is {tflm['arena_bytes']:,} bytes (measured: the smallest it "
                            f"allocates in), over {profile.name}'s budget of {profile.max_ram_bytes:,} bytes")
    elif profile.max_ram_bytes is not None:
        problems += _check_ram(profile, info, peak_ram or estimate_peak_ram(info))
    return problems


def _check_ops(profile: TargetProfile, info: dict[str, Any]) -> list[str]:
    if not profile.op_allowlist:
        return []
    allowed = set(profile.op_allowlist)
    return [f"op {op} ({count}x) is not in {profile.name}'s op allowlist"
            for op, count in sorted(info["op_histogram"].items()) if op not in allowed]


def _check_io(profile: TargetProfile, info: dict[str, Any]) -> list[str]:
    if profile.io_dtype is None:
        return []
    return [f"{role} '{t['name']}' is {canonical_dtype(t['dtype'])}; {profile.name} needs {profile.io_dtype} inputs "
            f"and outputs" for role, tensors in (("input", info["inputs"]), ("output", info["outputs"]))
            for t in tensors if canonical_dtype(t["dtype"]) != profile.io_dtype]


def _check_int8(profile: TargetProfile, info: dict[str, Any]) -> list[str]:
    """One problem listing every tensor that breaks the int8 rule (module docstring), the first few by name."""
    offenders: dict[str, str] = {}  # tensor name -> "dtype, where it comes from"
    if profile.io_dtype is None:  # with io_dtype set, the I/O check already holds the boundary to it
        for role, tensors in (("graph input", info["inputs"]), ("graph output", info["outputs"])):
            for t in tensors:
                if canonical_dtype(t["dtype"]) not in EIGHT_BIT:
                    offenders.setdefault(t["name"], f"{canonical_dtype(t['dtype'])}, {role}")
    if info["format"] == "tflite":
        boundary = {t["name"] for t in info["inputs"] + info["outputs"]}
        for index, op in enumerate(info["ops"]):
            for t in op["outputs"]:
                if t["name"] not in boundary and t["dtype"] not in EIGHT_BIT | INDEX_DTYPES:
                    offenders.setdefault(t["name"], f"{t['dtype']}, from {op['op']} #{index}")
            for t in op["inputs"]:
                if t["constant"] and t["dtype"] in FLOAT_DTYPES:
                    offenders.setdefault(t["name"], f"{t['dtype']}, weight of {op['op']} #{index}")
    else:
        initializers = info.get("initializers", {})
        for index, op in enumerate(info["ops"]):
            if op["op"] not in ONNX_WEIGHT_OPS:
                continue
            for name in op["inputs"]:
                dtype = canonical_dtype(initializers.get(name, ""))
                if dtype in FLOAT_DTYPES:
                    offenders.setdefault(name, f"{dtype}, weight of {op['op']} #{index}")
    if not offenders:
        return []
    counts = collections.Counter(where.split(",")[0] for where in offenders.values())
    named = "; ".join(f"'{name}' ({where})" for name, where in list(offenders.items())[:NAMED])
    more = f"; and {len(offenders) - NAMED} more" if len(offenders) > NAMED else ""
    kinds = ", ".join(f"{n} {dtype}" for dtype, n in sorted(counts.items()))
    return [f"{len(offenders)} tensors are not int8 ({kinds}), but {profile.name} runs only full-int8 models: "
            f"{named}{more}"]


def _check_ram(profile: TargetProfile, info: dict[str, Any], peak_ram: dict[str, Any]) -> list[str]:
    where = f"at op #{peak_ram['peak_op_index']} {peak_ram.get('peak_op') or ''}".rstrip()
    if profile.weights_in_flash:  # TFLite Micro: weights execute from flash, RAM holds the tensor arena
        used, what = peak_ram["peak_activation_bytes"], f"estimated peak activation RAM {where}"
        if profile.runtime == "tflm":
            what += " (an estimate: TFLM is not installed to measure its arena)"
    else:
        used = peak_ram["peak_ram_bytes"]
        what = (f"estimated peak RAM (weights {peak_ram['weights_bytes']:,} + activations "
                f"{peak_ram['peak_activation_bytes']:,} {where})")
    if used <= profile.max_ram_bytes:
        return []
    return [f"{what} is {used:,} bytes, over {profile.name}'s budget of {profile.max_ram_bytes:,} bytes"]
