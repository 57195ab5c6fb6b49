"""Graph passes over exported ONNX models that make ONNX Runtime run them faster, with the same math.

tf2onnx writes hard-sigmoid, relu6(x + 3) / 6, as Add, Clip and Mul. Every hard-swish and
squeeze-excite gate of MobileNetV3 has one, and ONNX Runtime's CPU provider cannot keep those ops in
its blocked NCHWc layout, so each costs a reorder out and back in around three elementwise passes.
`fuse_hard_sigmoid` writes them as one HardSigmoid(alpha=1/6, beta=0.5), which ONNX Runtime runs in
that layout: MobileNetV3-Small fp32 at 224 px went from 2.17 to 1.64 ms (1 thread) and from 1.87 to
1.11 ms (2 threads) (benchmarks/README.md). Quantized graphs keep Add/Clip/Mul, which ONNX Runtime
fuses into QLinearAdd/QLinearMul; it has no int8 HardSigmoid.

`fold_constant_scales` works on a static-quantized (QDQ) graph: a Mul by a positive constant c whose
other input is dequantized, DQ(q, s, z) * c, is DQ(q, s * c, z). The Mul and its requantization go
away and the value is exact; for MobileNetV3 that is the 1/6 of every hard-sigmoid, one QLinearMul
fewer per activation (int8 1.78 -> 1.57 ms, 1 thread).

`drop_identity_reshapes` removes the Reshape tf2onnx puts before every squeeze-excite convolution,
which reshapes [N, C, 1, 1] to [-1, C, 1, 1]: ONNX Runtime converts layouts around each (fp32 2
threads 1.11 -> 1.08 ms). Every export gets it.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

HARD_SIGMOID_OFFSET, HARD_SIGMOID_CAP, HARD_SIGMOID_SCALE = 3.0, 6.0, 1.0 / 6.0


class _Graph:
    """Producer, consumer and constant lookups over one ONNX graph."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.graph = graph
        seen: set[str] = set()
        for index, node in enumerate(graph.node):  # passes find nodes by name: make names unique
            if not node.name or node.name in seen:
                node.name = f"{node.name or node.op_type}__{index}"
            seen.add(node.name)
        self.producer = {name: node for node in graph.node for name in node.output}
        self.consumers: dict[str, list[Any]] = collections.defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.outputs = {output.name for output in graph.output}
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    def scalar(self, name: str) -> float | None:
        value = self.constants.get(name)
        return float(value.ravel()[0]) if value is not None and value.size == 1 else None

    def only_consumer(self, name: str, op_type: str) -> Any | None:
        """The single node reading `name`, when it is of `op_type` and `name` is not a graph output."""
        users = self.consumers.get(name, [])
        if name in self.outputs or len(users) != 1 or users[0].op_type != op_type:
            return None
        return users[0]

    def dequantized_scalar(self, name: str) -> float | None:
        """The value of a constant that the quantizer stored quantized and dequantizes at run time."""
        node = self.producer.get(name)
        if node is None or node.op_type != "DequantizeLinear":
            return None
        q, scale = self.constants.get(node.input[0]), self.scalar(node.input[1])
        zero = self.scalar(node.input[2]) if len(node.input) > 2 else 0.0
        if q is None or q.size != 1 or scale is None or zero is None:
            return None
        return (float(q.ravel()[0]) - zero) * scale


def _close(value: float | None, expected: float) -> bool:
    return value is not None and abs(value - expected) <= 1e-6 * max(1.0, abs(expected))


def _replace_nodes(graph: Any, removed: set[str], inserted: dict[str, Any]) -> None:
    """Drop `removed` nodes; put each `inserted[name]` where node `name` was (keeps topological order)."""
    nodes = []
    for node in graph.node:
        if node.name in inserted:
            nodes.append(inserted[node.name])
        if node.name not in removed:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _drop_unused(graph: Any) -> None:
    outputs = {output.name for output in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(name in read for name in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def fuse_hard_sigmoid(model: Any) -> int:
    """Add(x, 3) -> Clip(0, 6) -> Mul(1/6) becomes HardSigmoid(x, 1/6, 0.5), in place; returns how many."""
    from onnx import helper

    g = _Graph(model.graph)
    removed: set[str] = set()
    inserted: dict[str, Any] = {}
    for add in list(model.graph.node):
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        offsets = [g.scalar(name) for name in add.input]
        if not any(_close(v, HARD_SIGMOID_OFFSET) for v in offsets):
            continue
        x = add.input[1] if _close(offsets[0], HARD_SIGMOID_OFFSET) else add.input[0]
        clip = g.only_consumer(add.output[0], "Clip")
        if clip is None or len(clip.input) != 3 or not (_close(g.scalar(clip.input[1]), 0.0)
                                                       and _close(g.scalar(clip.input[2]), HARD_SIGMOID_CAP)):
            continue
        mul = g.only_consumer(clip.output[0], "Mul")
        if mul is None or not any(_close(g.scalar(name), HARD_SIGMOID_SCALE) for name in mul.input):
            continue
        removed |= {add.name, clip.name, mul.name}
        inserted[mul.name] = helper.make_node("HardSigmoid", [x], [mul.output[0]], name=f"{mul.name}/hard_sigmoid",
                                              alpha=HARD_SIGMOID_SCALE, beta=0.5)
    _replace_nodes(model.graph, removed, inserted)
    _drop_unused(model.graph)
    return len(inserted)


def fold_constant_scales(model: Any) -> int:
    """DQ(q, s, z) * c -> Q -> DQ becomes DQ(q, s * c, z) in a QDQ graph, in place; returns how many."""
    from onnx import helper, numpy_helper

    g = _Graph(model.graph)
    removed: set[str] = set()
    inserted: dict[str, Any] = {}
    for mul in list(model.graph.node):
        if mul.op_type != "Mul" or len(mul.input) != 2:
            continue
        for k in (0, 1):
            c, dq = g.dequantized_scalar(mul.input[k]), g.producer.get(mul.input[1 - k])
            if c is not None and c > 0 and dq is not None and dq.op_type == "DequantizeLinear" \
                    and g.scalar(dq.input[1]) is not None:
                break
        else:
            continue
        requantize = g.only_consumer(mul.output[0], "QuantizeLinear")
        readers = g.consumers.get(requantize.output[0], []) if requantize is not None else []
        if not readers or requantize.output[0] in g.outputs or any(
                r.op_type != "DequantizeLinear" or r.input[1:] != requantize.input[1:] for r in readers) \
                or any(r.output[0] in g.outputs for r in readers[1:]):
            continue  # only a plain requantize-dequantize pair (or several identical dequantizes) goes
        scale_name = f"{mul.name}/folded_scale"
        scale = np.asarray(g.constants[dq.input[1]] * np.float32(c), dtype=g.constants[dq.input[1]].dtype)
        model.graph.initializer.append(numpy_helper.from_array(scale, scale_name))
        merged = readers[0].output[0]
        for other in readers[1:]:  # every reader of the old requantized value now reads one tensor
            for node in model.graph.node:
                node.input[:] = [merged if name == other.output[0] else name for name in node.input]
        removed |= {mul.name, requantize.name} | {r.name for r in readers}
        inserted[mul.name] = helper.make_node("DequantizeLinear", [dq.input[0], scale_name, *dq.input[2:]], [merged],
                                              name=f"{mul.name}/folded")
    _replace_nodes(model.graph, removed, inserted)
    _drop_unused(model.graph)
    return len(inserted)


def drop_identity_reshapes(model: Any) -> int:
    """Remove Reshape nodes that give their input's own shape, in place; returns how many.

    tf2onnx writes one before each squeeze-excite convolution ([N, C, 1, 1] to [-1, C, 1, 1]); ONNX
    Runtime cannot carry its blocked (NCHWc) or NHWC int8 layout through a Reshape, so each costs
    layout conversions on both sides."""
    from onnx import shape_inference

    g = _Graph(model.graph)
    inferred = shape_inference.infer_shapes(model)
    shapes = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    renamed: dict[str, str] = {}
    removed: set[str] = set()
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.output[0] in g.outputs or any(a.name == "allowzero" and a.i
                                                                          for a in node.attribute):
            continue
        target, shape = g.constants.get(node.input[1]), shapes.get(node.input[0])
        if target is None or shape is None or len(target) != len(shape) or not shape:
            continue
        known = all(d is not None for d in shape[1:])
        if known and int(target[0]) in (-1, shape[0] if shape[0] is not None else -2) \
                and [int(t) for t in target[1:]] == shape[1:]:
            renamed[node.output[0]] = node.input[0]
            removed.add(node.name)
    for node in model.graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    _replace_nodes(model.graph, removed, {})
    _drop_unused(model.graph)
    return len(removed)


def narrow_weights(model: Any, peak: int) -> int:
    """Requantize every int8 weight whose values exceed ±`peak`: symmetric, on -peak..peak, per output
    channel (per tensor where its reader is not a Conv), in place; returns how many.

    For graphs whose weights arrive already quantized to 8 bits (a QAT model's fake-quant nodes, which
    tf2onnx writes per tensor with a zero point), where ONNX Runtime's `reduce_range` does not reach: see
    onnx_quantize.py for why x86 needs 7-bit weights. Per channel because halving a per-tensor grid
    rounds the weights of low-range channels (a depthwise kernel's) to nothing: the demo model's QAT file
    fell from 96.7 % to 21.7 %. An int32 bias read by the same Conv/Gemm keeps the quantizer's invariant
    bias_scale = input_scale * weight_scale."""
    from onnx import TensorProto, helper, numpy_helper

    g = _Graph(model.graph)
    dtypes = {init.name: init.data_type for init in model.graph.initializer}
    changed = 0
    for dq in list(model.graph.node):
        if dq.op_type != "DequantizeLinear" or dtypes.get(dq.input[0]) != TensorProto.INT8:
            continue
        q, scale = g.constants[dq.input[0]], g.constants.get(dq.input[1])
        if scale is None or np.abs(q.astype(np.int32)).max() <= peak:
            continue
        zero = g.constants.get(dq.input[2]) if len(dq.input) > 2 else np.zeros(scale.shape, np.int8)
        if zero is None:  # a zero point computed at run time: not a stored weight
            continue
        readers = g.consumers.get(dq.output[0], [])
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        if scale.size > 1:
            shape[axis] = -1
        weight = (q.astype(np.float64) - zero.reshape(shape)) * scale.reshape(shape)
        if readers and all(r.op_type == "Conv" and r.input[1] == dq.output[0] for r in readers):
            axis, shape = 0, [-1] + [1] * (q.ndim - 1)  # Conv weights are [out, in / group, kh, kw]
        spread = np.abs(weight).max(axis=tuple(i for i in range(q.ndim) if shape[i] == 1), keepdims=True)
        new_scale = np.where(spread > 0, spread / peak, 1.0)
        narrowed = np.clip(np.round(weight / new_scale), -peak, peak).astype(np.int8)
        new_scale = new_scale.reshape(-1) if -1 in shape else new_scale.reshape(())
        _set_input(model, dq, 0, numpy_helper.from_array(narrowed, f"{dq.input[0]}/narrowed"))
        _set_input(model, dq, 1, numpy_helper.from_array(new_scale.astype(np.float32), f"{dq.input[1]}/narrowed"))
        zeros = np.zeros(new_scale.shape, dtype=np.int8)
        if len(dq.input) > 2:
            _set_input(model, dq, 2, numpy_helper.from_array(zeros, f"{dq.input[2]}/narrowed"))
        _set_axis(dq, axis, helper)
        for reader in readers:
            has_bias = reader.op_type in ("Conv", "Gemm") and len(reader.input) > 2
            bias = g.producer.get(reader.input[2]) if has_bias else None
            if bias is None or bias.op_type != "DequantizeLinear" or dtypes.get(bias.input[0]) != TensorProto.INT32:
                continue
            old_bias_scale = g.constants[bias.input[1]].astype(np.float64)
            value = g.constants[bias.input[0]] * old_bias_scale
            input_scale = old_bias_scale / (scale.reshape(-1) if scale.size > 1 else scale)
            bias_scale = (input_scale * new_scale).astype(np.float32)
            _set_input(model, bias, 0, numpy_helper.from_array(np.round(value / bias_scale).astype(np.int32),
                                                               f"{bias.input[0]}/narrowed"))
            _set_input(model, bias, 1, numpy_helper.from_array(bias_scale, f"{bias.input[1]}/narrowed"))
            _set_axis(bias, 0, helper)
        changed += 1
    _drop_unused(model.graph)
    return changed


def _set_axis(node: Any, axis: int, helper: Any) -> None:
    kept = [a for a in node.attribute if a.name != "axis"]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute("axis", axis)])


def _set_input(model: Any, node: Any, index: int, tensor: Any) -> None:
    model.graph.initializer.append(tensor)
    node.input[index] = tensor.name
