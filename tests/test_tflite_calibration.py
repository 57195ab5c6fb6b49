"""int8 TFLite ranges are the tensors' real ranges (converters/tflite_calibration.py).

TFLiteConverter's calibrator reads some tensors after an in-place op has overwritten them; these tests
look at exactly those tensors in edgetl's int8 file and hold their scales against ranges measured
in Keras on the same calibration images."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.backbones import mobilenet_v3
from edgetl.tf_env import keras
from tests.test_mobilenet_v3 import randomize, with_head


@pytest.fixture(scope="module")
def classifier():
    backbone = mobilenet_v3.build_mobilenet_v3_small(32, 0.75, None)
    randomize(backbone)
    return with_head(backbone)


@pytest.fixture(scope="module")
def calibration():
    return np.random.default_rng(2).uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def int8_ops(classifier, calibration, tmp_path_factory):
    """Per op of edgetl's int8 file: its name, and its input and output tensors as (name, scale)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgetl.converters.base import ConversionInput, ExportOptions
    from edgetl.converters.tflite import KerasToTFLite

    path = tmp_path_factory.mktemp("calibration") / "int8.tflite"
    KerasToTFLite().convert(ConversionInput(classifier, 32, ["a", "b", "c"], calibration),
                            ExportOptions(format="tflite", quantize="int8"), path)
    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: (t["name"], t["quantization"][0]) for t in interpreter.get_tensor_details()}
    return [(op["op_name"], [tensors[i] for i in op["inputs"] if i in tensors], [tensors[i] for i in op["outputs"]])
            for op in interpreter._get_ops_details()]


def test_relu6_inside_each_folded_hard_swish_keeps_its_own_range(int8_ops):
    """x * relu6(x + 3) (the 1/6 folded into the next kernels): the converter recorded relu6(x + 3)'s
    range as the product's, hundreds of times too wide on MobileNetV3-Large, and the file's top-1 fell to
    chance. relu6's output lies in [0, 6]: an int8 step of at most 6/255."""
    relu6_outputs = [(name, scale) for op, _, outputs in int8_ops if op == "ADD"
                     for name, scale in outputs if name.endswith("hard_swish/add")]
    assert relu6_outputs, "no hard-swish ADD in the int8 file: was the model converted with HardSwish layers?"
    too_wide = [(name, scale) for name, scale in relu6_outputs if scale > 6.0 / 255 * 1.001]
    assert not too_wide, too_wide


def test_each_residual_branch_keeps_its_own_range_not_the_sums(classifier, calibration, int8_ops):
    """The block's projection output feeds a residual ADD that the converter's interpreter runs in place:
    the projection got the sum's range. Its int8 scale must be its own range / 255."""
    adds = [layer.name for layer in classifier.layers if isinstance(layer, keras().layers.Add)]
    assert adds, "MobileNetV3-Small has residual blocks"
    projections = [name.replace("Add", "project/BatchNorm") for name in adds]
    outputs = keras().Model(classifier.input, [classifier.get_layer(n).output for n in projections])(calibration)
    for add, values in zip(adds, outputs):
        expected = (max(float(np.max(values)), 0.0) - min(float(np.min(values)), 0.0)) / 255
        branch = [(name, scale) for op, inputs, out in int8_ops if op == "ADD" and f"/{add}/" in out[0][0] + "/"
                  for name, scale in inputs if f"{add.split('/')[0]}/project/" in name]
        assert len(branch) == 1, (add, branch)
        assert branch[0][1] == pytest.approx(expected, rel=0.02), (add, branch[0])
