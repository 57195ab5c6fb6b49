"""The MobileNetV3 rebuild: same network as tf_keras.applications, but TFMOT can quantize it and its
int8 TFLite graph stays inside XNNPACK (no int8 HARD_SWISH), with hard-swish's 1/6 folded away and
activation ranges measured again (converters/tflite_calibration.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgetl.artifacts.inspection import inspect_model
from edgetl.backbones import mobilenet_v3
from edgetl.network.model import load_model
from edgetl.tf_env import keras, tf

BUILDERS = {"small": mobilenet_v3.build_mobilenet_v3_small, "large": mobilenet_v3.build_mobilenet_v3_large}
MINIMALISTIC_BUILDERS = {"small": mobilenet_v3.build_mobilenet_v3_small_minimalistic,
                         "large": mobilenet_v3.build_mobilenet_v3_large_minimalistic}


def randomize(model, seed=0):
    """Random weights everywhere, BatchNorm statistics included, so that a layer left uncopied shows;
    He-scaled per true fan-in so that activations neither vanish nor explode through the network."""
    rng = np.random.default_rng(seed)
    layers = keras().layers
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            shape = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.8, 1.2, shape), rng.normal(0, 0.1, shape),
                               rng.normal(0, 0.1, shape), rng.uniform(0.8, 1.2, shape)])
        elif layer.weights:
            kernel, *bias = layer.get_weights()
            depthwise = isinstance(layer, layers.DepthwiseConv2D)
            fan_in = np.prod(kernel.shape[:2] if depthwise else kernel.shape[:-1])
            layer.set_weights([rng.normal(0, np.sqrt(2 / fan_in), kernel.shape)]
                              + [rng.normal(0, 0.1, b.shape) for b in bias])


def with_head(backbone, classes=3):
    k = keras()
    x = k.layers.GlobalAveragePooling2D(name="head_pool")(backbone.output)
    return k.Model(backbone.input, k.layers.Dense(classes, activation="softmax", name="head_probs")(x))


def to_tflite(model, path, calibration=None):
    """Convert like converters/tflite.py (batch-1 function; int8 = full integer, float32 in/out), but
    without handing the converter the Keras model: it would export it as a SavedModel first, which
    costs ~35 s for the QAT model on this machine instead of ~2 s, for the same ops."""
    t = tf()
    spec = t.TensorSpec([1, *model.input_shape[1:]], t.float32, name="image")
    function = t.function(lambda image: model(image, training=False), input_signature=[spec], autograph=False)
    converter = t.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
    if calibration is not None:
        converter.optimizations = [t.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        converter.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path.write_bytes(converter.convert())
    return inspect_model(path)


def assert_int8_throughout(info):
    """Only the boundary QUANTIZE/DEQUANTIZE touch float; every other op is int8 (int32 biases)."""
    ops = info["ops"]
    assert ops[0]["op"] == "QUANTIZE" and ops[-1]["op"] == "DEQUANTIZE"
    assert info["op_histogram"]["QUANTIZE"] == 1 and info["op_histogram"]["DEQUANTIZE"] == 1
    for op in ops[1:-1]:
        dtypes = {t["dtype"] for t in op["inputs"] + op["outputs"]}
        assert dtypes <= {"int8", "int32"}, (op["op"], dtypes)


def assert_same_network(app, ours, images):
    """Same weighted layers by name, all copied across, same weights and output: the same network."""
    app_weighted = [layer.name for layer in app.layers if layer.weights]
    assert sorted(app_weighted) == sorted(layer.name for layer in ours.layers if layer.weights)
    assert mobilenet_v3.copy_weights_by_name(app, ours) == len(app_weighted)
    assert len(ours.weights) == len(app.weights) and ours.output_shape == app.output_shape
    np.testing.assert_allclose(ours(images, training=False), app(images, training=False), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def small_classifier():
    backbone = mobilenet_v3.build_mobilenet_v3_small(32, 0.75, None)
    randomize(backbone)
    return with_head(backbone)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("model_type,alpha", [("small", 1.0), ("small", 0.75), ("large", 1.0)])
def test_rebuild_equals_application_layer_for_layer(model_type, alpha, images):
    app = mobilenet_v3.application(model_type, 32, alpha, None)
    randomize(app)
    ours = BUILDERS[model_type](32, alpha, None)
    assert_same_network(app, ours, images)
    # Plain layers only, flat: what TFMOT can wrap one by one.
    kinds = {type(layer).__name__ for layer in ours.layers}
    assert not kinds & {"TFOpLambda", "Lambda", "Functional", "Model", "Sequential"}
    assert {"HardSwish", "HardSigmoid"} <= kinds


@pytest.mark.parametrize("builder,alpha,minimalistic", [(mobilenet_v3.build_mobilenet_v3_small, 0.75, False),
                                                       (mobilenet_v3.build_mobilenet_v3_small_minimalistic, 1.0, True)])
def test_imagenet_weights_are_copied_from_the_application(builder, alpha, minimalistic, monkeypatch):
    """weights="imagenet" builds the application with ImageNet weights and copies them by name
    (here the application is stubbed with random weights: no download in tests)."""
    calls = []

    def stub_application(model_type, image_size, alpha, weights, minimalistic=False):
        calls.append((weights, minimalistic))
        app = keras().applications.MobileNetV3Small(input_shape=(image_size, image_size, 3), alpha=alpha,
                                                   minimalistic=minimalistic, include_top=False, weights=None,
                                                   include_preprocessing=False)
        randomize(app, seed=7)
        stub_application.model = app
        return app

    monkeypatch.setattr(mobilenet_v3, "application", stub_application)
    ours = builder(32, alpha, "imagenet")
    assert calls == [("imagenet", minimalistic)]
    for layer in (layer for layer in stub_application.model.layers if layer.weights):
        for mine, theirs in zip(ours.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(mine, theirs)


def test_minimalistic_imagenet_weights_exist_for_alpha_1_only():
    """Keras refuses before any download: the application really is asked for the minimalistic weights."""
    with pytest.raises(ValueError, match="minimalistic"):
        mobilenet_v3.build_mobilenet_v3_small_minimalistic(32, 0.75, "imagenet")


@pytest.mark.parametrize("model_type,alpha", [("small", 1.0), ("small", 0.75), ("large", 1.0)])
def test_minimalistic_rebuild_equals_the_minimalistic_application(model_type, alpha, images):
    app = mobilenet_v3.application(model_type, 32, alpha, None, minimalistic=True)
    randomize(app)
    ours = MINIMALISTIC_BUILDERS[model_type](32, alpha, None)
    assert_same_network(app, ours, images)
    # The edge variant: no squeeze-excite gate, no hard activations, only 3x3 depthwise kernels.
    kinds = {type(layer).__name__ for layer in ours.layers}
    assert not kinds & {"TFOpLambda", "Lambda", "Multiply", "HardSwish", "HardSigmoid"}
    assert not [layer.name for layer in ours.layers if "squeeze_excite" in layer.name]
    depthwise = [layer for layer in ours.layers if isinstance(layer, keras().layers.DepthwiseConv2D)]
    assert {layer.kernel_size for layer in depthwise} == {(3, 3)}


def test_application_cannot_be_quantization_aware_trained():
    """Why the rebuild exists: TFMOT fails on the application's TFOpLambda hard-swish/hard-sigmoid
    (tf_keras 2.21 + TFMOT 0.8.1: AttributeError "'list' object has no attribute 'dtype'" while
    quantize_apply re-clones the `tf.__operators__.add` layer; past that, TFMOT's registry has no
    QuantizeConfig for TFOpLambda or Multiply)."""
    import tensorflow_model_optimization as tfmot

    model = with_head(mobilenet_v3.application("small", 32, 0.75, None))
    with pytest.raises((AttributeError, RuntimeError, ValueError, TypeError)):
        tfmot.quantization.keras.quantize_model(model)


def test_qat_trains_and_converts_to_int8_inside_xnnpack(small_classifier, images, tmp_path):
    from edgetl.backbones.layers import quantize_model

    qat = quantize_model(small_classifier)
    assert not [layer.name for layer in qat.layers
                if type(layer).__name__ not in ("QuantizeWrapperV2", "QuantizeLayer", "InputLayer")]
    qat.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = [w.numpy().copy() for w in qat.trainable_weights]
    loss = qat.train_on_batch(images, np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, qat.trainable_weights))

    info = to_tflite(qat, tmp_path / "qat_int8.tflite", calibration=images)
    assert_int8_throughout(info)
    # Hard-swish as int8 MUL/ADD (XNNPACK runs those), never the int8 HARD_SWISH XNNPACK lacks.
    assert "HARD_SWISH" not in info["op_histogram"]
    hard_swishes = sum(type(layer).__name__ == "HardSwish" for layer in small_classifier.layers)
    assert info["op_histogram"]["MUL"] >= 2 * hard_swishes


def test_float_export_fuses_hard_swish_and_int8_export_does_not(small_classifier, images, tmp_path):
    from edgetl.backbones.layers import HardSwish, for_int8_conversion

    hard_swishes = sum(isinstance(layer, HardSwish) for layer in small_classifier.layers)
    float_info = to_tflite(small_classifier, tmp_path / "float.tflite")
    assert float_info["op_histogram"]["HARD_SWISH"] == hard_swishes
    assert set(float_info["tensor_dtypes"]) <= {"float32", "int32"}

    int8_model = for_int8_conversion(small_classifier)
    assert all(layer.elementwise for layer in int8_model.layers if isinstance(layer, HardSwish))
    np.testing.assert_allclose(int8_model(images, training=False), small_classifier(images, training=False),
                               atol=1e-5, rtol=0)  # the same function, multiplied in another order
    int8_info = to_tflite(int8_model, tmp_path / "int8.tflite", calibration=images)
    assert_int8_throughout(int8_info)
    assert "HARD_SWISH" not in int8_info["op_histogram"]


def test_int8_conversion_folds_each_hard_swish_sixth_into_the_kernels_that_read_it(small_classifier, images,
                                                                                    tmp_path):
    """x * relu6(x + 3) / 6 costs two int8 MULs; with the 1/6 moved into the next kernels, one. In Small
    every hard-swish reaches only kernels (through padding and squeeze-excite); in Large the stem's feeds
    the first block's residual Add, which no kernel can correct, so it keeps its 1/6."""
    from edgetl.backbones.layers import HardSigmoid, HardSwish, for_int8_conversion

    int8_model = for_int8_conversion(small_classifier)
    hard_swishes = [layer for layer in int8_model.layers if isinstance(layer, HardSwish)]
    assert hard_swishes and all(layer.unscaled for layer in hard_swishes)
    np.testing.assert_allclose(int8_model(images, training=False), small_classifier(images, training=False),
                               atol=1e-5, rtol=0)
    info = to_tflite(int8_model, tmp_path / "int8.tflite", calibration=images)
    assert_int8_throughout(info)
    gates = sum(isinstance(layer, HardSigmoid) for layer in int8_model.layers)  # its own 1/6 MUL, and the gate's
    assert info["op_histogram"]["MUL"] == len(hard_swishes) + 2 * gates

    large = with_head(mobilenet_v3.build_mobilenet_v3_large(32, 1.0, None))
    randomize(large)
    folded = for_int8_conversion(large)
    unscaled = {layer.name for layer in folded.layers if isinstance(layer, HardSwish) and layer.unscaled}
    assert "Conv/hard_swish" not in unscaled
    assert len(unscaled) == sum(isinstance(layer, HardSwish) for layer in large.layers) - 1
    expected = large(images, training=False).numpy()
    np.testing.assert_allclose(folded(images, training=False), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["small", "large"])
def test_minimalistic_exports_to_int8_with_only_conv_add_mean(model_type, images, tmp_path):
    """The edge variant's int8 file has no HARD_SWISH (not on the Edge TPU compiler's list) and no MUL
    (no squeeze-excite, no hard activations left), and its features stay close to the float model's."""
    from edgetl.converters.base import ConversionInput, ExportOptions
    from edgetl.converters.tflite import KerasToTFLite
    from edgetl.targets.litert import LiteRTSession

    backbone = MINIMALISTIC_BUILDERS[model_type](32, 1.0, None)
    randomize(backbone)
    k = keras()
    features = k.Model(backbone.input, k.layers.GlobalAveragePooling2D()(backbone.output))
    path = tmp_path / "int8.tflite"
    KerasToTFLite().convert(ConversionInput(features, 32, ["a", "b", "c"], images),
                            ExportOptions(format="tflite", quantize="int8"), path)
    info = inspect_model(path)
    assert_int8_throughout(info)
    assert set(info["op_histogram"]) <= {"QUANTIZE", "DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PAD",
                                         "MEAN"}
    test_images = np.random.default_rng(2).uniform(-1, 1, images.shape).astype(np.float32)
    expected = features(test_images, training=False).numpy()
    error = LiteRTSession(path).predict(test_images) - expected
    assert np.linalg.norm(error) < 0.15 * np.linalg.norm(expected)  # ~0.04-0.07 measured


def test_save_and_load_round_trip_in_safe_mode(small_classifier, images, tmp_path):
    from edgetl.backbones.layers import HardSwish, for_int8_conversion

    path = tmp_path / "model.keras"
    small_classifier.save(path)
    loaded = load_model(path)
    np.testing.assert_allclose(loaded(images, training=False), small_classifier(images, training=False),
                               atol=1e-6, rtol=0)
    assert {type(layer).__name__ for layer in loaded.layers} >= {"HardSwish", "HardSigmoid"}
    elementwise = for_int8_conversion(small_classifier)
    elementwise.save(tmp_path / "elementwise.keras")
    assert all(layer.elementwise for layer in load_model(tmp_path / "elementwise.keras").layers
               if isinstance(layer, HardSwish))



def test_a_fresh_process_loads_a_saved_rebuild(small_classifier, images, tmp_path):
    """Like `edgetl export` does: a new process that only calls edgetl.network.model.load_model."""
    path = tmp_path / "model.keras"
    small_classifier.save(path)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "expected.npy", small_classifier(images, training=False).numpy())
    script = textwrap.dedent(f"""
        from pathlib import Path
        import numpy as np
        from edgetl.network.model import load_model
        model = load_model(Path({str(path)!r}))
        out = model(np.load({str(tmp_path / "images.npy")!r}), training=False).numpy()
        np.testing.assert_allclose(out, np.load({str(tmp_path / "expected.npy")!r}), atol=1e-6, rtol=0)
        print("LOADED", sorted({{type(layer).__name__ for layer in model.layers}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HardSwish" in result.stdout


def test_hard_activations_match_their_formulas():
    from edgetl.backbones.layers import HardSigmoid, HardSwish

    x = np.linspace(-5, 5, 41, dtype=np.float32)
    hard_sigmoid = np.clip(x + 3, 0, 6) / 6
    np.testing.assert_allclose(HardSigmoid()(x), hard_sigmoid, atol=1e-6)
    np.testing.assert_allclose(HardSwish()(x), x * hard_sigmoid, atol=1e-6)
    np.testing.assert_allclose(HardSwish(elementwise=True)(x), x * hard_sigmoid, atol=1e-6)
    assert HardSwish.from_config(HardSwish(elementwise=True, name="hs").get_config()).elementwise


# --- int8 ranges are the tensors' real ranges (converters/tflite_calibration.py). TFLiteConverter's calibrator
# records some tensors' ranges as the range of the op that consumes them; these tests look at exactly those
# tensors in edgetl's int8 file and hold their scales against ranges measured in Keras on the same images.

@pytest.fixture(scope="module")
def int8_ops(small_classifier, images, tmp_path_factory):
    """Per op of edgetl's int8 file of `small_classifier` (converters/tflite.py, so with the ranges measured again
    by converters/tflite_calibration.py): its name, and its input and output tensors as (name, scale)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgetl.converters.base import ConversionInput, ExportOptions
    from edgetl.converters.tflite import KerasToTFLite

    path = tmp_path_factory.mktemp("calibration") / "int8.tflite"
    KerasToTFLite().convert(ConversionInput(small_classifier, 32, ["a", "b", "c"], images),
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


def test_each_residual_branch_keeps_its_own_range_not_the_sums(small_classifier, images, int8_ops):
    """The block's projection output feeds a residual ADD, and the converter recorded the sum's range for it.
    Its int8 scale must be its own range / 255."""
    adds = [layer.name for layer in small_classifier.layers if isinstance(layer, keras().layers.Add)]
    assert adds, "MobileNetV3-Small has residual blocks"
    projections = [name.replace("Add", "project/BatchNorm") for name in adds]
    outputs = keras().Model(small_classifier.input, [small_classifier.get_layer(n).output for n in projections])(images)
    for add, values in zip(adds, outputs):
        expected = (max(float(np.max(values)), 0.0) - min(float(np.min(values)), 0.0)) / 255
        branch = [(name, scale) for op, inputs, out in int8_ops if op == "ADD" and f"/{add}/" in out[0][0] + "/"
                  for name, scale in inputs if f"{add.split('/')[0]}/project/" in name]
        assert len(branch) == 1, (add, branch)
        assert branch[0][1] == pytest.approx(expected, rel=0.02), (add, branch[0])
