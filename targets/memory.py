"""How much RAM running a model takes: an estimate from the graph, and what LiteRT really allocates.

The estimate (`estimate_peak_ram`) is weights + peak live activations:

- weights: the bytes of the constant data (TFLite: each buffer once, as the file stores it; ONNX:
  initializers and Constant nodes);
- activations: a liveness pass over the ops in the file's execution order. A tensor is live from the
  op that produces it (graph inputs: from the start) to its last consumer (graph outputs: to the
  end); at each op, the inputs it reads and the outputs it writes are live together. The peak is the
  largest sum of live tensor sizes. That is the smallest arena any planner can achieve without
  splitting ops; real planners pad, fragment, and add per-kernel scratch (im2col buffers), so they
  use somewhat more.

Bytes per element come from the dtype; dynamic dimensions (the batch of an ONNX export) count as 1.
ONNX files list no shapes per op, so they are taken from `onnx.shape_inference.infer_shapes`.
Control-flow subgraphs (If/Loop/While bodies) are not walked.

What LiteRT actually allocates (`interpreter_arena_bytes`): the Python Interpreter exposes no arena
size, but after `allocate_tensors()` each tensor's buffer is readable as a NumPy view
(`interpreter.tensor(i)()`), and its address shows where the arena planner put it. The union of the
address ranges of all non-constant tensors is the memory the planner used. The interpreter is built
without the default XNNPACK delegate, because XNNPACK takes the delegated tensors into its own
workspace, which Python cannot see (their buffers read as null); without it every op runs as a
builtin kernel, as in TFLite Micro. `include_scratch=False` leaves out the kernels' temporary tensors
(e.g. CONV_2D's im2col buffer), which the graph estimate cannot know about.

Measured with ai-edge-litert 2.3 on the tests' models (activation bytes; arena without / with scratch):
- 32x32x3 -> Conv2D(8)+ReLU -> DepthwiseConv2D -> GAP -> Dense(4), float32: estimate 65,536;
  arena 77,856 (1.19x) / 155,648 (2.4x, the im2col buffer of the 3-channel conv is 110,592 bytes);
- the same, full int8 with uint8 I/O: estimate 16,384; arena 22,536 (1.38x) / 41,984 (2.6x);
- 16x16x4 -> three Conv2D(8) -> Add(skip) -> GAP -> Dense, float32: estimate 24,576; arena 28,712
  (1.17x) / 102,400.
The gap without scratch is the planner keeping graph inputs allocated for the whole run (a model with
a large float input and int8 inside reaches ~2x) plus its greedy placement. In-place ops (LiteRT can
share a RESHAPE's buffer with its input) could make the arena smaller than the estimate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# Bits per element; TFLite dtype names and ONNX TensorProto names (lowercased) both appear here.
_BITS = {"float64": 64, "double": 64, "float32": 32, "float": 32, "float16": 16, "bfloat16": 16,
         "int64": 64, "uint64": 64, "int32": 32, "uint32": 32, "int16": 16, "uint16": 16, "int8": 8,
         "uint8": 8, "bool": 8, "int4": 4, "uint4": 4, "complex64": 64, "complex128": 128,
         "float8e4m3fn": 8, "float8e4m3fnuz": 8, "float8e5m2": 8, "float8e5m2fnuz": 8}
_CANONICAL = {"float": "float32", "double": "float64"}


def canonical_dtype(dtype: str) -> str:
    """One name per dtype: ONNX's "float" is TFLite's "float32"."""
    return _CANONICAL.get(dtype, dtype)


def tensor_bytes(dtype: str, shape: list[Any]) -> int | None:
    """Size of a dense tensor; None for dtypes without a fixed size (string, resource)."""
    bits = _BITS.get(dtype)
    if bits is None:
        return None
    elements = math.prod(d if isinstance(d, int) and d > 0 else 1 for d in shape)  # dynamic dims count as 1
    return (elements * bits + 7) // 8


def peak_live_bytes(ops: list[tuple[list[str], list[str]]], sizes: dict[str, int], graph_inputs: list[str],
                    graph_outputs: list[str]) -> tuple[int, int]:
    """(peak bytes, op index of the first peak) of live activations over `ops` in order.

    `ops` are (input keys, output keys); only keys in `sizes` are activations, others are ignored.
    """
    last = len(ops) - 1
    first_use = {k: 0 for k in graph_inputs if k in sizes}
    last_use = dict(first_use)
    for i, (inputs, outputs) in enumerate(ops):
        for key in outputs:
            if key in sizes:
                first_use.setdefault(key, i)
                last_use[key] = max(last_use.get(key, i), i)
        for key in inputs:
            if key in sizes:
                first_use.setdefault(key, 0)  # read but produced by no op: an input or a variable
                last_use[key] = i
    for key in graph_outputs:
        if key in sizes:
            first_use.setdefault(key, 0)
            last_use[key] = max(last, 0)
    delta = [0] * (max(last, 0) + 2)
    for key, start in first_use.items():
        delta[start] += sizes[key]
        delta[last_use[key] + 1] -= sizes[key]
    peak, peak_index, running = 0, 0, 0
    for i in range(max(last, 0) + 1):
        running += delta[i]
        if running > peak:
            peak, peak_index = running, i
    return peak, peak_index


def estimate_peak_ram(info: dict[str, Any]) -> dict[str, Any]:
    """Estimated peak RAM of running the model described by `inspection.inspect_model`."""
    if info["format"] == "onnx":
        graph = _onnx_graph(info)
    else:
        graph = _tflite_graph(info)
    peak, index = peak_live_bytes(graph["ops"], graph["sizes"], graph["inputs"], graph["outputs"])
    index = graph["op_index"][index] if graph["op_index"] else 0  # back to info["ops"] numbering
    result = {"weights_bytes": graph["weights_bytes"], "peak_activation_bytes": peak,
              "peak_ram_bytes": graph["weights_bytes"] + peak, "peak_op_index": index,
              "peak_op": info["ops"][index]["op"] if info["ops"] else None,
              "method": f"weights (constant data: TFLite buffers / ONNX initializers) + peak of live activations over "
                        f"{len(graph['ops'])} "
                        "ops in file order (live from producer or graph start to last consumer or graph end); "
                        "dynamic dims = 1"}
    if graph["unsized"]:
        result["unsized_tensors"] = graph["unsized"][:10]  # counted as 0 bytes
    return result


def _tflite_constants(data: bytes) -> tuple[dict[int, int], dict[int, int]]:
    """({tensor index: buffer index} of the constant tensors, {buffer index: bytes}) of subgraph 0.

    Weights are counted per buffer, not per tensor: the converter stores identical constants (zero
    biases, shared axes) once and points several tensors at them.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    tensors, buffers = {}, {}
    for i in range(graph.TensorsLength()):
        index = graph.Tensors(i).Buffer()
        buffer = model.Buffers(index) if index < model.BuffersLength() else None
        size = (buffer.DataLength() or buffer.Size()) if buffer is not None else 0
        if size:
            tensors[i], buffers[index] = index, size
    return tensors, buffers


def _tflite_graph(info: dict[str, Any]) -> dict[str, Any]:
    # inspect_model gives tensors, not indices; name + dtype + shape tells them apart (names may repeat).
    def key(t: dict[str, Any]) -> str:
        return f"{t['name']}|{t['dtype']}|{t['shape']}"

    sizes: dict[str, int] = {}
    unsized: list[str] = []
    ops = []
    for op in info["ops"]:
        for t in op["inputs"] + op["outputs"]:
            size = tensor_bytes(t["dtype"], t["shape"])
            if size is None:
                unsized.append(t["name"])
            elif not t["constant"]:
                sizes[key(t)] = size
        ops.append(([key(t) for t in op["inputs"] if not t["constant"]], [key(t) for t in op["outputs"]]))
    for t in info["inputs"] + info["outputs"]:
        size = tensor_bytes(t["dtype"], t["shape"])
        if size is not None:
            sizes[key(t)] = size
    _, buffers = _tflite_constants(Path(info["path"]).read_bytes())
    return {"ops": ops, "op_index": list(range(len(ops))), "sizes": sizes, "weights_bytes": sum(buffers.values()),
            "unsized": sorted(set(unsized)), "inputs": [key(t) for t in info["inputs"]],
            "outputs": [key(t) for t in info["outputs"]]}


def _onnx_graph(info: dict[str, Any]) -> dict[str, Any]:
    import onnx
    from onnx import TensorProto

    model = onnx.shape_inference.infer_shapes(onnx.load(info["path"]))
    graph = model.graph

    def name_of(elem_type: int) -> str:
        return TensorProto.DataType.Name(elem_type).lower()

    weights: dict[str, int] = {}
    unsized: list[str] = []
    constants = [(i.name, i) for i in graph.initializer]
    constants += [(n.output[0], a.t) for n in graph.node if n.op_type == "Constant"
                  for a in n.attribute if a.name == "value"]
    for name, tensor in constants:
        size = tensor_bytes(name_of(tensor.data_type), list(tensor.dims))
        if size is None:
            unsized.append(name)
        weights[name] = size or 0
    sizes: dict[str, int] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.name in weights or not value.type.HasField("tensor_type"):
            continue
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        size = tensor_bytes(name_of(tensor_type.elem_type), dims)
        if size is None:
            unsized.append(value.name)
        else:
            sizes[value.name] = size
    ops, op_index, produced = [], [], set()
    for index, op in enumerate(info["ops"]):
        if op["op"] == "Constant":  # its value is a weight, not an op that runs
            continue
        op_index.append(index)
        ops.append(([n for n in op["inputs"] if n and n not in weights], [n for n in op["outputs"] if n]))
        produced.update(op["outputs"])
    unsized += sorted(n for n in produced if n and n not in sizes and n not in weights)  # shape inference gave up
    initializer_names = {i.name for i in graph.initializer}
    return {"ops": ops, "op_index": op_index, "sizes": sizes, "weights_bytes": sum(weights.values()),
            "unsized": sorted(set(unsized)), "inputs": [v.name for v in graph.input if v.name not in initializer_names],
            "outputs": [v.name for v in graph.output]}


def interpreter_arena_bytes(path: Path, include_scratch: bool = True) -> int | None:
    """Bytes LiteRT's arena planner placed non-constant tensors in, for a .tflite file; None if unreadable.

    See the module docstring for the method. None when LiteRT cannot load or allocate the model.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    data = Path(path).read_bytes()
    try:
        constant, _ = _tflite_constants(data)
        in_file = schema.Model.GetRootAs(data, 0).Subgraphs(0).TensorsLength()  # later indices: kernel scratch
        interpreter = Interpreter(model_content=data,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    except Exception:  # a damaged flatbuffer fails in many ways in the generated reader; LiteRT raises ValueError
        return None
    ranges = []
    for detail in interpreter.get_tensor_details():
        index = detail["index"]
        if index in constant or (index >= in_file and not include_scratch):
            continue
        try:
            view = interpreter.tensor(index)()
        except ValueError:  # no buffer: an unused tensor
            continue
        if view.nbytes:
            ranges.append((view.ctypes.data, view.ctypes.data + view.nbytes))
        del view  # a live view would block the interpreter from reallocating
    total, end = 0, 0
    for start, stop in sorted(ranges):
        if start >= end:
            total += stop - start
        elif stop > end:
            total += stop - end
        end = max(end, stop)
    return total
