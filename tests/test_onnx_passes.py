"""ONNX graph passes (converters/onnx_passes.py): same outputs in ONNX Runtime, fewer ops."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgetl.converters.onnx_passes import (drop_identity_reshapes, fold_constant_scales, fuse_hard_sigmoid,
                                          narrow_weights)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph.node)


def _scalar(name: str, value: float, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _model(nodes, initializers, shape=(2, 8)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _hard_swish_then_not_a_hard_sigmoid() -> onnx.ModelProto:
    """hard_swish(x) as tf2onnx writes it, then relu6(h + 2) / 6, which is no hard-sigmoid and must stay."""
    nodes = [helper.make_node("Add", ["x", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
             helper.make_node("Mul", ["c", "sixth"], ["hs"]), helper.make_node("Mul", ["x", "hs"], ["h"]),
             helper.make_node("Add", ["h", "two"], ["a2"]), helper.make_node("Clip", ["a2", "zero", "six"], ["c2"]),
             helper.make_node("Mul", ["sixth", "c2"], ["y"])]
    return _model(nodes, [_scalar("three", 3.0), _scalar("two", 2.0), _scalar("zero", 0.0), _scalar("six", 6.0),
                          _scalar("sixth", 1.0 / 6.0)])


def test_hard_sigmoid_is_fused_with_the_same_outputs():
    model = _hard_swish_then_not_a_hard_sigmoid()
    x = np.random.default_rng(0).uniform(-8, 8, (2, 8)).astype(np.float32)
    before = _run(model, x)
    assert fuse_hard_sigmoid(model) == 1
    onnx.checker.check_model(model)
    assert _ops(model) == {"HardSigmoid": 1, "Mul": 2, "Add": 1, "Clip": 1}
    assert {init.name for init in model.graph.initializer} == {"two", "zero", "six", "sixth"}  # "three" unused now
    np.testing.assert_allclose(_run(model, x), before, atol=1e-6, rtol=0)


def test_hard_sigmoid_is_not_fused_when_an_inner_value_is_also_used():
    model = _hard_swish_then_not_a_hard_sigmoid()
    model.graph.output.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, (2, 8)))  # the Clip is read
    assert fuse_hard_sigmoid(model) == 0
    assert "HardSigmoid" not in _ops(model)


def _qdq_constant_multiply(constant: float) -> onnx.ModelProto:
    """x -> Q -> DQ -> Mul(DQ(constant)) -> Q -> DQ -> Relu -> y: what the quantizer writes for x * c."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_x", "z"], ["q_x"]),
             helper.make_node("DequantizeLinear", ["q_x", "s_x", "z"], ["d_x"]),
             helper.make_node("DequantizeLinear", ["q_c", "s_c", "z"], ["d_c"]),
             helper.make_node("Mul", ["d_x", "d_c"], ["m"]),
             helper.make_node("QuantizeLinear", ["m", "s_m", "z"], ["q_m"]),
             helper.make_node("DequantizeLinear", ["q_m", "s_m", "z"], ["d_m"]),
             helper.make_node("Relu", ["d_m"], ["y"])]
    s_c = abs(constant) / 127.0
    return _model(nodes, [_scalar("s_x", 0.05), _scalar("z", 128, np.uint8), _scalar("s_c", s_c),
                          _scalar("q_c", 128 + np.sign(constant) * 127, np.uint8),
                          _scalar("s_m", 0.05 * abs(constant))])


def test_constant_multiply_folds_into_the_dequantize_scale():
    model = _qdq_constant_multiply(1.0 / 6.0)
    x = np.random.default_rng(1).uniform(-6, 6, (2, 8)).astype(np.float32)
    before = _run(model, x)
    assert fold_constant_scales(model) == 1
    onnx.checker.check_model(model)
    assert _ops(model) == {"QuantizeLinear": 1, "DequantizeLinear": 1, "Relu": 1}
    after = _run(model, x)
    # exact now: x's quantized value times c, where before it was requantized to the Mul's own scale
    expected = np.maximum(np.round(x / 0.05).clip(-128, 127) * 0.05 * np.float32(1.0 / 6.0), 0)
    np.testing.assert_allclose(after, expected, atol=1e-6, rtol=0)
    assert np.abs(after - before).max() <= 0.05 / 6.0 / 2 + 1e-6  # within half a step of the old requantization


def _qdq_conv_with_8_bit_weights() -> tuple[onnx.ModelProto, np.ndarray]:
    """x -> Q -> DQ -> Conv(DQ(w), DQ(bias)) -> y: one per-tensor, asymmetric 8-bit weight as tf2onnx writes a
    QAT model's, two output channels of very different ranges (a depthwise kernel's usual spread)."""
    rng = np.random.default_rng(0)
    weight = np.concatenate([rng.uniform(-2, 2, (1, 3, 3, 3)), rng.uniform(-0.05, 0.05, (1, 3, 3, 3))])
    s_w, z_w = 4.0 / 255, np.int8(-1)
    q_w = np.clip(np.round(weight / s_w) + z_w, -128, 127).astype(np.int8)
    s_x = 2.0 / 255
    bias = np.array([0.3, -0.02])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_x", "z_x"], ["q_x"]),
             helper.make_node("DequantizeLinear", ["q_x", "s_x", "z_x"], ["d_x"]),
             helper.make_node("DequantizeLinear", ["q_w", "s_w", "z_w"], ["d_w"]),
             helper.make_node("DequantizeLinear", ["q_b", "s_b"], ["d_b"]),
             helper.make_node("Conv", ["d_x", "d_w", "d_b"], ["y"], pads=[1, 1, 1, 1])]
    initializers = [_scalar("s_x", s_x), _scalar("z_x", 128, np.uint8), numpy_helper.from_array(q_w, "q_w"),
                    _scalar("s_w", s_w), _scalar("z_w", z_w, np.int8), _scalar("s_b", s_x * s_w),
                    numpy_helper.from_array(np.round(bias / (s_x * s_w)).astype(np.int32), "q_b")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 6, 6))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 2, 6, 6))], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model, (q_w.astype(np.float64) - z_w) * s_w


def test_8_bit_weights_are_narrowed_per_channel_to_7_bits_with_the_same_function():
    model, weight = _qdq_conv_with_8_bit_weights()
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
    before = _run(model, x)
    assert narrow_weights(model, 64) == 1
    onnx.checker.check_model(model)
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    dq = next(node for node in model.graph.node if node.op_type == "DequantizeLinear" and node.output[0] == "d_w")
    q, scale, zero = (constants[name] for name in dq.input)
    assert q.dtype == np.int8 and np.abs(q.astype(int)).max() <= 64 and not zero.any() and scale.shape == (2,)
    # per channel: the small channel keeps its resolution (a halved per-tensor grid would round it to 0..1 steps)
    step = scale[:, None, None, None]
    assert np.all(np.abs(q * step - weight) <= step / 2 + 1e-7)
    assert np.abs(q[1]).max() == 64
    np.testing.assert_allclose(_run(model, x), before, atol=0.01 * np.abs(before).max())  # 7-bit rounding
    assert narrow_weights(model, 64) == 0  # already within 7 bits

def test_negative_constant_is_not_folded():
    model = _qdq_constant_multiply(-0.5)  # a negative scale is not a valid dequantization
    assert fold_constant_scales(model) == 0
    assert _ops(model)["Mul"] == 1


def test_identity_reshape_is_dropped_and_a_real_one_kept():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "same"], ["s"]),
             helper.make_node("Reshape", ["s", "flat"], ["f"]), helper.make_node("Reshape", ["f", "back"], ["y"])]
    model = _model(nodes, [numpy_helper.from_array(np.array(v, np.int64), n)
                           for n, v in (("same", [-1, 8]), ("flat", [16]), ("back", [2, 8]))])
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"  # a dynamic batch, as exported
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    x = np.random.default_rng(3).normal(size=(2, 8)).astype(np.float32)
    before = _run(model, x)
    assert drop_identity_reshapes(model) == 1  # [N, 8] -> [-1, 8]; flattening to [16] changes the shape
    assert _ops(model) == {"Relu": 1, "Reshape": 2}
    np.testing.assert_array_equal(_run(model, x), before)


def test_mobilenet_v3_exports_get_the_passes(tmp_path):
    """The real path: a MobileNetV3-Small export; the verification inside `convert` is not what checks here,
    ONNX Runtime against Keras is."""
    from edgetl.backbones import mobilenet_v3
    from edgetl.backbones.layers import HardSwish
    from edgetl.converters.base import ConversionInput, ExportOptions
    from edgetl.converters.onnx_export import KerasToONNX
    from tests.test_mobilenet_v3 import randomize, with_head

    backbone = mobilenet_v3.build_mobilenet_v3_small(32, 0.75, None)
    randomize(backbone)
    model = with_head(backbone)
    images = np.random.default_rng(2).uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
    source = ConversionInput(model, 32, ["a", "b", "c"], images)
    hard_swishes = sum(isinstance(layer, HardSwish) for layer in model.layers)

    facts = KerasToONNX().convert(source, ExportOptions(format="onnx", quantize="none"), tmp_path / "f.onnx")
    fused = onnx.load(str(tmp_path / "f.onnx"))
    # one per hard-swish and one per squeeze-excite gate; the Reshape before each squeeze-excite convolution
    assert facts["graph_passes"]["hard_sigmoid_fused"] == _ops(fused)["HardSigmoid"] > hard_swishes > 0
    assert facts["graph_passes"]["identity_reshapes_dropped"] > 0 and _ops(fused)["Reshape"] == 0
    assert _ops(fused)["Clip"] == 0  # every hard-sigmoid went; ReLU6 does not occur in MobileNetV3-Small
    session = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": images})[0], model(images, training=False).numpy(),
                               atol=1e-5, rtol=0)

    facts = KerasToONNX().convert(source, ExportOptions(format="onnx", quantize="int8"), tmp_path / "q.onnx")
    folded = facts["graph_passes"]["constant_scales_folded"]
    assert folded == _ops(fused)["HardSigmoid"]  # the 1/6 of every hard-sigmoid
    quantized = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    agreement = (quantized.run(None, {"image": images})[0].argmax(1) == model(images).numpy().argmax(1)).mean()
    assert agreement >= 0.8
