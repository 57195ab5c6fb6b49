"""What is inside a .tflite or .onnx file: inputs/outputs, ops, tensor dtypes, size, metadata.

Read from the file's own structure (the TFLite flatbuffer schema, the ONNX protobuf), not by running
it, so it also works on files edgetl did not make and on models with ops the runtime lacks.
"""

from __future__ import annotations

import collections
import functools
from pathlib import Path
from typing import Any

from edgetl.errors import InputError

FLOAT_DTYPES = frozenset({"float16", "float32", "float64", "bfloat16"})
# Ops that carry weights: the ones whose precision decides size and speed.
TFLITE_WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}
ONNX_WEIGHT_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "ConvInteger", "MatMulInteger", "QLinearConv",
                   "QLinearMatMul"}


@functools.cache
def _tflite_enums() -> tuple[dict[int, str], dict[int, str]]:
    from ai_edge_litert import schema_py_generated as schema

    def names(cls: type) -> dict[int, str]:
        return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}

    return names(schema.BuiltinOperator), names(schema.TensorType)


def inspect_model(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".tflite":
        return inspect_tflite(path)
    if path.suffix == ".onnx":
        return inspect_onnx(path)
    raise InputError(f"{path}: unknown model type; expected a .tflite or .onnx file")


def inspect_tflite(path: Path) -> dict[str, Any]:
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise InputError(f"{path}: not a TFLite model (no TFL3 identifier); truncated or another format?")
    op_names, type_names = _tflite_enums()
    try:
        model = schema.Model.GetRootAs(data, 0)
        graph = model.Subgraphs(0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            custom = code.CustomCode()
            codes.append(custom.decode() if custom else op_names.get(builtin, f"BUILTIN_{builtin}"))

        def tensor(index: int) -> dict[str, Any]:
            t = graph.Tensors(index)
            q = t.Quantization()
            scales = q.ScaleAsNumpy().tolist() if q is not None and q.ScaleLength() else []
            zero_points = q.ZeroPointAsNumpy().tolist() if q is not None and q.ZeroPointLength() else []
            buffer = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
            return {"name": t.Name().decode(errors="replace"), "dtype": type_names.get(t.Type(), str(t.Type())).lower(),
                    "shape": t.ShapeAsNumpy().tolist() if t.ShapeLength() else [],
                    "constant": bool(buffer is not None and (buffer.DataLength() or buffer.Size())),
                    "scale": scales[0] if len(scales) == 1 else (scales or None),
                    "zero_point": zero_points[0] if len(zero_points) == 1 else (zero_points or None)}

        ops = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            ops.append({"op": codes[op.OpcodeIndex()],
                        "inputs": [tensor(j) for j in op.InputsAsNumpy().tolist() if j >= 0] if op.InputsLength() else [],
                        "outputs": [tensor(j) for j in op.OutputsAsNumpy().tolist()] if op.OutputsLength() else []})
        inputs = [tensor(j) for j in graph.InputsAsNumpy().tolist()]
        outputs = [tensor(j) for j in graph.OutputsAsNumpy().tolist()]
        dtypes = collections.Counter(tensor(j)["dtype"] for j in range(graph.TensorsLength()))
        metadata_names = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
    except Exception as exc:  # a damaged flatbuffer fails in many ways inside the generated reader
        raise InputError(f"{path}: damaged TFLite model ({type(exc).__name__}: {exc})") from exc
    return {"path": str(path), "format": "tflite", "bytes": len(data), "inputs": inputs, "outputs": outputs,
            "op_histogram": dict(collections.Counter(op["op"] for op in ops)), "ops": ops,
            "tensor_dtypes": dict(dtypes), "metadata": _tflite_metadata(data, metadata_names)}


def _tflite_metadata(data: bytes, names: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {"entries": names}
    if "TFLITE_METADATA" in names:
        from edgetl.converters.tflite_metadata import read_metadata

        found["tflite_metadata"] = read_metadata(data)
    return found


def inspect_onnx(path: Path) -> dict[str, Any]:
    import onnx
    from onnx import TensorProto, numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__}); truncated or another format?") from exc
    graph = model.graph
    if not graph.node:
        raise InputError(f"{path}: ONNX model has no graph nodes; truncated or another format?")
    initializers = {init.name: init for init in graph.initializer}

    def dtype_name(elem_type: int) -> str:
        return TensorProto.DataType.Name(elem_type).lower()

    def value_info(v: Any) -> dict[str, Any]:
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in v.type.tensor_type.shape.dim]
        return {"name": v.name, "dtype": dtype_name(v.type.tensor_type.elem_type), "shape": dims}

    ops = [{"op": n.op_type, "name": n.name, "inputs": list(n.input), "outputs": list(n.output)} for n in graph.node]
    int8 = [numpy_helper.to_array(i) for i in graph.initializer if i.data_type == TensorProto.INT8]
    return {"path": str(path), "format": "onnx", "bytes": path.stat().st_size,
            "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "inputs": [value_info(v) for v in graph.input if v.name not in initializers],
            "outputs": [value_info(v) for v in graph.output],
            "op_histogram": dict(collections.Counter(n.op_type for n in graph.node)), "ops": ops,
            "initializer_dtypes": dict(collections.Counter(dtype_name(i.data_type) for i in graph.initializer)),
            "initializers": {name: dtype_name(init.data_type) for name, init in initializers.items()},
            "int8_peak": max((int(abs(a.astype("int16")).max()) for a in int8 if a.size), default=None),
            "metadata": {p.key: p.value for p in model.metadata_props}}


# ONNX ops that compute on integers (QDQ pairs around an op are fused into an integer kernel by ONNX Runtime).
_ONNX_INTEGER_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger")


def float_op_count(info: dict[str, Any]) -> int:
    """Operators that compute in floating point: TFLite, those with a float output (DEQUANTIZE aside);
    ONNX, nodes that are not integer or quantization ops and take no input from a DequantizeLinear
    (ONNX Runtime runs such QDQ groups as integer kernels). A tie-breaker between equally fast files."""
    if info["format"] == "tflite":
        return sum(1 for op in info["ops"] if op["op"] != "DEQUANTIZE"
                   and any(t["dtype"] in FLOAT_DTYPES for t in op["outputs"]))
    dequantized = {out for op in info["ops"] if op["op"] == "DequantizeLinear" for out in op["outputs"]}
    return sum(1 for op in info["ops"] if op["op"] not in _ONNX_INTEGER_OPS and not op["op"].startswith("QLinear")
               and not any(name in dequantized for name in op["inputs"]))
