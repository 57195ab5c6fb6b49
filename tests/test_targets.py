"""Target profiles, artifact checks and the peak-RAM estimate, on real converted files.

The models are built at test time with tf_keras and converted with the real TFLite converter and
tf2onnx. Their activation sizes are small enough to compute by hand, which the memory tests do.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edgetl.artifacts.inspection import inspect_model
from edgetl.errors import InputError
from edgetl.targets import checks, memory, profiles
from edgetl.targets.profiles import list_profiles, load_profile

# The TFLite converter warns about int8 I/O statistics it derives itself.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")

SHIPPED = ["android", "arm64-cpu", "cortex-m4", "cortex-m7", "cuda", "edgetpu", "mcu", "x86-cpu"]
F32 = 4  # bytes


def _conv_model():
    """32x32x3 -> Conv2D(8, ReLU) -> DepthwiseConv2D -> GAP -> Dense(4, softmax)."""
    from edgetl.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    image = k.Input((32, 32, 3))
    x = k.layers.Conv2D(8, 3, padding="same")(image)
    x = k.layers.ReLU()(x)
    x = k.layers.DepthwiseConv2D(3, padding="same")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    return k.Model(image, k.layers.Dense(4, activation="softmax")(x))


def _residual_model():
    """16x16x4 -> a=Conv(8) -> b=Conv(8) -> c=Conv(8) -> Add(a, c) -> GAP -> Dense(2): `a` stays live across b, c."""
    from edgetl.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    image = k.Input((16, 16, 4))
    a = k.layers.Conv2D(8, 3, padding="same")(image)
    b = k.layers.Conv2D(8, 3, padding="same")(a)
    c = k.layers.Conv2D(8, 3, padding="same")(b)
    x = k.layers.GlobalAveragePooling2D()(k.layers.Add()([a, c]))
    return k.Model(image, k.layers.Dense(2)(x))


def _to_tflite(model, out: Path, int8_io: str | None = None) -> Path:
    """Float32, or full int8 (TFLITE_BUILTINS_INT8) with `int8_io` ("uint8" or "float32") inputs/outputs."""
    from edgetl.tf_env import tf

    t = tf()
    converter = t.lite.TFLiteConverter.from_keras_model(model)
    if int8_io is not None:
        rng = np.random.default_rng(0)
        shape = (1, *model.input_shape[1:])
        converter.optimizations = [t.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.random(shape, dtype=np.float32)] for _ in range(16))
        converter.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io == "uint8":
            converter.inference_input_type = t.uint8
            converter.inference_output_type = t.uint8
    out.write_bytes(converter.convert())
    return out


def _to_onnx(model, out: Path) -> Path:
    import onnx
    import tf2onnx

    from edgetl.tf_env import tf

    t = tf()
    spec = t.TensorSpec([None, 32, 32, 3], t.float32, name="image")
    function = t.function(lambda image: model(image, training=False), input_signature=[spec], autograph=False)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=13)
    onnx.save(proto, str(out))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("target_models")
    model = _conv_model()
    return {"float": _to_tflite(model, root / "float.tflite"),
            "int8": _to_tflite(model, root / "int8.tflite", int8_io="uint8"),
            "int8_float_io": _to_tflite(model, root / "int8_float_io.tflite", int8_io="float32"),
            "onnx": _to_onnx(model, root / "float.onnx"),
            "residual": _to_tflite(_residual_model(), root / "residual.tflite")}


@pytest.fixture(scope="module")
def infos(files: dict[str, Path]) -> dict[str, dict]:
    return {key: inspect_model(path) for key, path in files.items()}


def _write_profile(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'schema_version = 1\nname = "{name}"\ndescription = "test"\nthreads = 1\n{body}\n')
    return path


# --- profiles -------------------------------------------------------------------------------------


def test_every_shipped_profile_loads_by_name_and_in_the_list():
    listed = list_profiles()
    assert [p.name for p in listed] == SHIPPED
    for profile in listed:
        assert load_profile(profile.name) == profile
        assert profile.formats[0] == profiles.RUNTIME_FORMAT[profile.runtime]
        assert Path(profile.source).name == f"{profile.name}.toml"
    mcu, edgetpu, cuda = load_profile("mcu"), load_profile("edgetpu"), load_profile("cuda")
    assert mcu.int8_required and mcu.quantization == ("int8",) and mcu.weights_in_flash
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE"} <= set(mcu.op_allowlist)
    assert mcu.max_model_bytes == 1024 * 1024 and mcu.max_ram_bytes == 512 * 1024
    assert edgetpu.io_dtype == "uint8" and edgetpu.int8_required and "HARD_SWISH" not in edgetpu.op_allowlist
    assert cuda.runtime == "onnxruntime" and cuda.quantization[0] == "fp16"
    assert {"CUDAExecutionProvider", "TensorrtExecutionProvider"} <= set(cuda.execution_providers)
    assert load_profile("android").delegate == "gpu" and load_profile("arm64-cpu").threads == 4


def test_runtimes_default_to_each_formats_runtime():
    assert load_profile("x86-cpu").usable_runtimes == ("litert", "onnxruntime", "openvino")
    assert load_profile("android").usable_runtimes == ("litert",)
    assert "tflm" in load_profile("mcu").usable_runtimes


def test_profile_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_profile("mcu").threads = 8  # type: ignore[misc]


def test_a_valid_profile_file_loads_by_path(tmp_path: Path):
    path = _write_profile(tmp_path, "board", 'runtime = "litert"\nformats = ["tflite"]\n'
                                             'quantization = ["int8", "none"]\nmax_ram_bytes = 1000\n'
                                             'op_allowlist = ["CONV_2D"]')
    profile = load_profile(path)
    assert (profile.name, profile.quantization, profile.max_ram_bytes, profile.delegate) == \
        ("board", ("int8", "none"), 1000, None)
    assert load_profile(str(path)) == profile


@pytest.mark.parametrize("body, key", [
    ('runtime = "litert"\nformats = ["tflite"]\nquantization = ["int8"]\ncolour = "red"', "colour"),
    ('runtime = "litert"\nformats = ["tflite"]\nquantization = ["int8"]\nmax_ram_bytes = "512K"', "max_ram_bytes"),
    ('runtime = "litert"\nformats = ["tflite"]\nquantization = "int8"', "quantization"),
    ('runtime = "litert"\nformats = ["tflite"]\nquantization = ["int8"]\nint8_required = 1', "int8_required"),
    ('runtime = "tensorrt"\nformats = ["tflite"]\nquantization = ["int8"]', "runtime"),
    ('runtime = "litert"\nformats = ["tflite", "pb"]\nquantization = ["int8"]', "formats"),
    ('runtime = "litert"\nformats = ["tflite"]\nquantization = ["int4"]', "quantization"),
    ('runtime = "litert"\nformats = ["tflite"]\nquantization = ["int8"]\nop_allowlist = ["CONV2D"]', "op_allowlist"),
    ('runtime = "litert"\nformats = ["tflite"]', "quantization"),  # missing
    ('runtime = "litert"\nformats = ["tflite"]\nruntimes = ["litert", "openvino"]\nquantization = ["int8"]',
     "runtimes"),  # OpenVINO runs .onnx files, and the profile takes none
    ('runtime = "litert"\nformats = ["tflite", "onnx"]\nruntimes = ["openvino"]\nquantization = ["int8"]',
     "runtimes"),  # leaves out the profile's own runtime
])
def test_invalid_profile_names_the_file_and_the_key(tmp_path: Path, body: str, key: str):
    path = _write_profile(tmp_path, "bad", body)
    with pytest.raises(InputError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert str(path) in message and f"'{key}'" in message and "\n" not in message


def test_newer_schema_version_is_refused(tmp_path: Path):
    path = tmp_path / "future.toml"
    path.write_text('schema_version = 2\nname = "future"\ndescription = "x"\nruntime = "litert"\n'
                    'formats = ["tflite"]\nquantization = ["int8"]\nthreads = 1\n')
    with pytest.raises(InputError, match=r"future\.toml.*'schema_version' 2 is newer"):
        load_profile(path)


def test_every_problem_is_reported_at_once(tmp_path: Path):
    path = _write_profile(tmp_path, "many", 'runtime = "onnxruntime"\nformats = ["tflite"]\nquantization = ["fp16"]\n'
                                            'int8_required = true\nthreads2 = 3\ndelegate = "npu"')
    with pytest.raises(InputError) as caught:
        load_profile(path)
    message = str(caught.value)
    for fragment in ["unknown key 'threads2'", "'runtime' onnxruntime runs onnx", "'int8_required' is true",
                     "'delegate' has unknown value 'npu'"]:
        assert fragment in message


def test_broken_toml_and_unknown_names(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text("name = [unclosed\n")
    with pytest.raises(InputError, match="broken.toml: not valid TOML"):
        load_profile(path)
    with pytest.raises(InputError, match="unknown target profile 'raspberry'.*mcu"):
        load_profile("raspberry")
    with pytest.raises(InputError, match="no such target profile file"):
        load_profile(tmp_path / "missing.toml")


# --- checks ---------------------------------------------------------------------------------------


def _int8_problems(problems: list[str]) -> list[str]:
    return [p for p in problems if "not int8" in p]


@pytest.mark.parametrize("target", ["mcu", "edgetpu"])
def test_int8_targets_fail_the_float_model_and_pass_the_int8_one(infos: dict, target: str):
    profile = load_profile(target)
    float_problems = _int8_problems(checks.check_artifact(profile, infos["float"]))
    assert len(float_problems) == 1
    # The first activation is the conv output; the message names it and the op that produced it.
    conv_output = infos["float"]["ops"][0]["outputs"][0]["name"]
    assert f"'{conv_output}' (float32, from CONV_2D #0)" in float_problems[0]
    assert checks.check_artifact(profile, infos["int8"]) == []  # uint8 I/O, all int8 inside, allowed ops


def test_io_dtype_rules_at_the_graph_boundary(infos: dict):
    float_io = infos["int8_float_io"]
    assert float_io["inputs"][0]["dtype"] == "float32" and "QUANTIZE" in float_io["op_histogram"]
    float_io_target = dataclasses.replace(load_profile("mcu"), name="float-io", io_dtype="float32")
    assert checks.check_artifact(float_io_target, float_io) == []  # QUANTIZE/DEQUANTIZE at the boundary are fine
    mcu = _int8_problems(checks.check_artifact(load_profile("mcu"), float_io))
    assert len(mcu) == 1 and "graph input" in mcu[0] and "graph output" in mcu[0]
    edgetpu = checks.check_artifact(load_profile("edgetpu"), float_io)
    assert [p for p in edgetpu if p.startswith("input ")] == \
        [f"input '{float_io['inputs'][0]['name']}' is float32; edgetpu needs uint8 inputs and outputs"]
    assert _int8_problems(edgetpu) == []  # inside the graph it is all int8
    # And a float-I/O model whose inside is float is still caught.
    assert _int8_problems(checks.check_artifact(float_io_target, infos["float"]))


def test_op_outside_the_allowlist_is_named_with_its_count(tmp_path: Path, infos: dict):
    ops = [op for op in load_profile("mcu").op_allowlist if op != "DEPTHWISE_CONV_2D"]
    path = _write_profile(tmp_path, "no-dw", 'runtime = "litert"\nformats = ["tflite"]\nquantization = ["int8"]\n'
                                             f"op_allowlist = {ops!r}".replace("'", '"'))
    problems = checks.check_artifact(load_profile(path), infos["int8"])
    assert problems == ["op DEPTHWISE_CONV_2D (1x) is not in no-dw's op allowlist"]


def test_format_mismatch_skips_the_rest(infos: dict):
    assert checks.check_artifact(load_profile("mcu"), infos["onnx"]) == \
        ["format onnx is not one mcu runs (it takes tflite); other checks skipped"]
    assert checks.check_artifact(load_profile("cuda"), infos["onnx"]) == []
    assert checks.check_artifact(load_profile("x86-cpu"), infos["onnx"]) == []


def test_onnx_float_weights_break_an_int8_requirement(infos: dict):
    target = dataclasses.replace(load_profile("cuda"), int8_required=True, quantization=("int8",))
    problems = _int8_problems(checks.check_artifact(target, infos["onnx"]))
    assert len(problems) == 1 and "weight of Conv" in problems[0] and "graph input" in problems[0]


def test_size_budget(infos: dict):
    size = infos["int8"]["bytes"]
    assert size == Path(infos["int8"]["path"]).stat().st_size
    at_limit = dataclasses.replace(load_profile("edgetpu"), max_model_bytes=size)
    assert checks.check_artifact(at_limit, infos["int8"]) == []
    over = dataclasses.replace(at_limit, max_model_bytes=size - 1)
    assert checks.check_artifact(over, infos["int8"]) == \
        [f"model file is {size:,} bytes, over edgetpu's limit of {size - 1:,} bytes"]


def test_ram_budget(infos: dict):
    # int8 conv model, activations by hand: the two 32x32x8 int8 maps live together at the depthwise conv.
    activations = 2 * 32 * 32 * 8
    mcu = dataclasses.replace(load_profile("mcu"), max_ram_bytes=activations)
    assert checks.check_artifact(mcu, infos["int8"]) == []  # weights are in flash: activations only
    problems = checks.check_artifact(dataclasses.replace(mcu, max_ram_bytes=activations - 1), infos["int8"])
    assert len(problems) == 1 and f"is {activations:,} bytes, over mcu's budget of {activations - 1:,}" in problems[0]
    assert "DEPTHWISE_CONV_2D" in problems[0]
    # Where weights live in RAM, they count too: the same budget now fails.
    pi = dataclasses.replace(load_profile("arm64-cpu"), max_ram_bytes=activations)
    problems = checks.check_artifact(pi, infos["int8"])
    assert len(problems) == 1 and "weights" in problems[0]
    # An estimate passed in is used as given.
    given = {"weights_bytes": 0, "peak_activation_bytes": 10**9, "peak_ram_bytes": 10**9, "peak_op_index": 0}
    assert checks.check_artifact(load_profile("arm64-cpu"), infos["int8"], peak_ram=given)


# --- memory ---------------------------------------------------------------------------------------


def test_liveness_keeps_skip_tensors_and_graph_outputs_alive():
    # x(1) -A-> a(10) -B-> b(20) -C-> c(30); D: add(a, c) -> d(5). b is also a graph output.
    ops = [(["x"], ["a"]), (["a"], ["b"]), (["b"], ["c"]), (["a", "c"], ["d"])]
    sizes = {"x": 1, "a": 10, "b": 20, "c": 30, "d": 5}
    # At C: a (waiting for D) + b + c = 60; at D: a + b (output, to the end) + c + d = 65.
    assert memory.peak_live_bytes(ops, sizes, ["x"], ["d"]) == (60, 2)
    assert memory.peak_live_bytes(ops, sizes, ["x"], ["d", "b"]) == (65, 3)
    # The graph input lives from the start: a big input dominates op A.
    assert memory.peak_live_bytes(ops, {**sizes, "x": 100}, ["x"], ["d"]) == (110, 0)


def _constant_bytes_in_litert(path: str) -> int:
    """Bytes of weights LiteRT reads from the model: distinct buffers of tensors that point into the file."""
    from ai_edge_litert.interpreter import Interpreter

    data = Path(path).read_bytes()
    start = np.frombuffer(data, np.uint8).ctypes.data
    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    seen = set()
    for detail in interpreter.get_tensor_details():
        try:
            view = interpreter.tensor(detail["index"])()
        except ValueError:  # no buffer (taken over by the XNNPACK delegate)
            continue
        if start <= view.ctypes.data < start + len(data):
            seen.add((view.ctypes.data, view.nbytes))
        del view
    return sum(size for _, size in seen)


def test_peak_ram_by_hand_float_int8_onnx(infos: dict):
    # Conv model: input 32x32x3, then two 32x32x8 maps; the peak is both maps at the depthwise conv.
    assert infos["float"]["op_histogram"] == {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "MEAN": 1,
                                              "FULLY_CONNECTED": 1, "SOFTMAX": 1}  # ReLU fused into the conv
    float_est = memory.estimate_peak_ram(infos["float"])
    assert float_est["peak_activation_bytes"] == 2 * 32 * 32 * 8 * F32
    assert float_est["peak_op"] == "DEPTHWISE_CONV_2D" and float_est["peak_op_index"] == 1
    assert float_est["weights_bytes"] == _constant_bytes_in_litert(infos["float"]["path"])
    assert float_est["peak_ram_bytes"] == float_est["weights_bytes"] + float_est["peak_activation_bytes"]
    int8_est = memory.estimate_peak_ram(infos["int8"])
    assert int8_est["peak_activation_bytes"] == 2 * 32 * 32 * 8
    assert int8_est["weights_bytes"] == _constant_bytes_in_litert(infos["int8"]["path"])

    import onnx
    from onnx import numpy_helper

    onnx_est = memory.estimate_peak_ram(infos["onnx"])  # batch dimension is symbolic: counted as 1
    assert onnx_est["peak_activation_bytes"] == 2 * 32 * 32 * 8 * F32
    initializers = onnx.load(infos["onnx"]["path"]).graph.initializer
    assert onnx_est["weights_bytes"] == sum(numpy_helper.to_array(i).nbytes for i in initializers)


def test_peak_ram_by_hand_with_a_skip_connection(infos: dict):
    info = infos["residual"]
    assert info["op_histogram"]["CONV_2D"] == 3 and info["op_histogram"]["ADD"] == 1
    # a, b, c are 16x16x8 float32 = 8,192 bytes. At conv c, a is still waiting for the Add: a + b + c.
    fmap = 16 * 16 * 8 * F32
    estimate = memory.estimate_peak_ram(info)
    assert estimate["peak_activation_bytes"] == 3 * fmap
    assert info["ops"][estimate["peak_op_index"]]["op"] == "CONV_2D"


@pytest.mark.parametrize("key", ["float", "int8", "residual"])
def test_estimate_against_the_interpreter_arena(files: dict, infos: dict, key: str):
    """The estimate is a lower bound of what LiteRT's planner uses for the model's tensors, within 1.5x."""
    estimate = memory.estimate_peak_ram(infos[key])["peak_activation_bytes"]
    arena = memory.interpreter_arena_bytes(files[key], include_scratch=False)
    with_scratch = memory.interpreter_arena_bytes(files[key])
    assert arena is not None and with_scratch is not None
    assert estimate <= arena <= 1.5 * estimate
    assert with_scratch >= arena  # plus the kernels' own buffers (im2col)


def test_arena_is_none_for_a_file_litert_cannot_load(tmp_path: Path):
    path = tmp_path / "junk.tflite"
    path.write_bytes(b"\0\0\0\0TFL3" + b"\0" * 64)
    assert memory.interpreter_arena_bytes(path) is None


def test_tensor_bytes_by_dtype():
    assert memory.tensor_bytes("float32", [1, 2, 3]) == 24
    assert memory.tensor_bytes("float", ["N", 2]) == 8  # ONNX name, symbolic batch as 1
    assert memory.tensor_bytes("int4", [3]) == 2
    assert memory.tensor_bytes("string", [4]) is None
    assert memory.tensor_bytes("int8", []) == 1  # a scalar
