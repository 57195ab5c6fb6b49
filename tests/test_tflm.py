"""Microcontrollers: every `mcu`-class file run in TensorFlow Lite Micro itself (PyPI tflite-micro), its real
arena, the ops TFLM lacks, the board profiles, and the firmware sources in the bundle.

A full-int8 file (int8 input and output, as `compress --target mcu` makes) of the session's trained run;
TFLM runs it on this host with its reference kernels.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgetl.artifacts.inspection import inspect_model
from edgetl.targets import tflm
from edgetl.targets.checks import check_artifact
from edgetl.targets.profiles import load_profile
from tests.conftest import RUN_VAL_IMAGES, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mcu_artifact(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgetl.exporting.exporter import export_run

    folder = tmp_path_factory.mktemp("mcu") / "tflite-int8-int8io"
    export_run(run, str(folder), format="tflite", quantize="int8", io_dtype="int8", calibration_size=24,
               verify_size=18)
    return folder


def test_tflite_micro_is_installed_here():
    assert tflm.unavailable_reason() is None  # a dependency of edgetl on Linux x86_64: CI must run the rows below


def test_bench_runs_the_file_in_tflm_with_its_real_arena_and_tflm_agrees_with_litert(run, mcu_artifact, tmp_path):
    from edgetl.runner.bench import BenchOptions, run_bench

    report = run_bench([str(mcu_artifact)], BenchOptions(threads=(1, 2), min_runs=5, min_seconds=0.05, warmup=1,
                                                         targets=("mcu", "x86-cpu"), out=tmp_path / "report"))
    rows = {a["name"]: a for a in report["artifacts"]}
    litert, micro = rows["tflite-int8-int8io"], rows["tflite-int8-int8io@tflm"]
    assert micro["runtime"] == "tflm" and [r["threads"] for r in micro["latency"]] == [1]
    assert micro["parity"]["images"] == litert["parity"]["images"] == RUN_VAL_IMAGES
    assert micro["parity"]["accuracy"] == litert["parity"]["accuracy"]
    # TFLM's reference kernels against LiteRT's on the same int8 file: the same answer for every image.
    model = mcu_artifact / "model.tflite"
    from edgetl.artifacts.run_dir import Run, load_images
    from edgetl.targets import open_session

    opened = Run.open(run)
    images = load_images(list(opened.splits[1].paths), opened.image_size, opened.preprocessing)
    on_device = open_session(model, runtime="tflm").predict(images)
    on_litert = open_session(model).predict(images)
    assert (on_device.argmax(1) == on_litert.argmax(1)).all()
    # The real arena is the smallest that allocates: 16 bytes less does not.
    arena = micro["tflm"]["arena_bytes"]
    assert micro["tflm"]["load_problem"] is None and arena % tflm.ARENA_STEP == 0
    assert tflm._probe(model, arena)[0] and not tflm._probe(model, arena - tflm.ARENA_STEP)[0]
    assert arena > micro["peak_ram_estimate"]["peak_activation_bytes"]  # per-op data and scratch on top
    # Only TFLM rows speak for the mcu target, and never for x86.
    assert report["recommendations"]["mcu"]["artifact"] == "tflite-int8-int8io@tflm"
    assert report["recommendations"]["x86-cpu"]["artifact"] == "tflite-int8-int8io"
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert f"tensor arena {arena:,} bytes measured by TFLM" in markdown and "not the device's" in markdown


def test_a_kernel_tflm_lacks_fails_the_mcu_check_naming_the_op(tmp_path):
    from edgetl.tf_env import tf

    t = tf()

    class TopK(t.Module):
        @t.function(input_signature=[t.TensorSpec([1, 8], t.float32)], autograph=False)
        def call(self, x):
            return t.math.top_k(x, 3).values

    model = tmp_path / "topk.tflite"
    model.write_bytes(t.lite.TFLiteConverter.from_concrete_functions([TopK().call.get_concrete_function()]).convert())
    facts = tflm.facts(model)
    assert facts == {"load_problem": "TFLM has no kernel for TOPK_V2", "arena_bytes": None,
                     "measured_by": "tflite-micro on this host"}
    problems = check_artifact(load_profile("mcu"), inspect_model(model), tflm=facts)
    assert problems[0] == "TFLM has no kernel for TOPK_V2"
    with pytest.raises(Exception, match="TFLM has no kernel for TOPK_V2"):
        tflm.TFLMSession(model)


def test_board_profiles_budget_the_measured_arena_and_say_by_how_much_nothing_fits(run, tmp_path):
    import edgetl

    work = tmp_path / "run"
    shutil.copytree(run, work, ignore=shutil.ignore_patterns("artifacts", "bench", "compress", "edgetl.log"))
    report = edgetl.compress(str(work), target="cortex-m4", threads=(1,), min_runs=5, min_seconds=0.05)
    shipped = report["compress"]["recommended"]
    assert shipped["name"] == "tflite-int8-int8io@tflm", report["compress"]
    arena = next(a for a in report["artifacts"] if a["name"] == shipped["name"])["tflm"]["arena_bytes"]
    assert arena <= load_profile("cortex-m4").max_ram_bytes
    small = tmp_path / "small-board.toml"
    text = (Path(load_profile("cortex-m4").source).read_text()
            .replace('name = "cortex-m4"', 'name = "small-board"'))
    small.write_text(re.sub(r"max_ram_bytes = [0-9_]+", f"max_ram_bytes = {arena - 1000}", text))
    refused = run_cli("compress", str(work), "--target", str(small), "--threads", "1")
    assert refused.returncode == 1, refused.stderr[-2000:]
    error = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert error == [f"error: no artifact fits small-board: the closest, tflite-int8-int8io@tflm, needs TFLM's "
                     f"tensor arena (measured) of {arena:,} bytes, 1,000 over the {arena - 1000:,} budget "
                     "(activations scale with the pixels: a smaller --image-size, e.g. 96 -> 64 px needs about "
                     "0.44x; or a smaller backbone, e.g. --backbone mobilenet_v2 --alpha 0.35, 0.63 MB in full int8). "
                     "Retrain with those options and compress again "
                     f"(report in {work}/compress/)"], refused.stderr[-2000:]


def test_the_bundle_of_a_full_int8_file_carries_firmware_sources_that_compile(run, mcu_artifact, tmp_path):
    import edgetl

    compiler = shutil.which("g++")
    assert compiler, "g++ is needed to check the generated C++ (CI installs it: .ci/run)"
    bundle = tmp_path / "bundle"
    edgetl.bundle(str(mcu_artifact), str(bundle))
    sources = bundle / "tflm"
    assert sorted(p.name for p in sources.iterdir()) == ["main.cc", "model_data.cc", "model_data.h"]
    done = subprocess.run([compiler, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-c", "model_data.cc", "-o",
                           str(tmp_path / "model_data.o")], cwd=sources, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    source = (sources / "model_data.cc").read_text()
    array = source[source.index("g_model_data[] = {") + len("g_model_data[] = {"):source.index("};")]
    data = bytes(int(value, 16) for value in re.findall(r"0x([0-9a-f]{2})", array))
    assert data == (bundle / "model.tflite").read_bytes() == (mcu_artifact / "model.tflite").read_bytes()
    assert f"const unsigned int g_model_data_len = {len(data)};" in source
    header = (sources / "model_data.h").read_text()
    spec = json.loads((bundle / "model.json").read_text())
    constants = dict(re.findall(r"constexpr (?:int|float) (k\w+) = (-?[0-9.e+-]+)f?;", header))
    assert float(constants["kInputScale"]) == pytest.approx(spec["input"]["quantization"]["scale"], rel=1e-7)
    assert int(constants["kInputZeroPoint"]) == spec["input"]["quantization"]["zero_point"]
    assert int(constants["kOutputZeroPoint"]) == spec["output"]["quantization"]["zero_point"]
    assert int(constants["kInputHeight"]) == spec["input"]["shape"][1]
    assert int(constants["kTensorArenaSize"]) >= tflm.facts(mcu_artifact / "model.tflite")["arena_bytes"]
    labels = (bundle / "labels.txt").read_text().splitlines()
    assert f"kLabels[kNumClasses] = {{{', '.join(json.dumps(label) for label in labels)}}};" in source
    registered = re.findall(r"resolver\.Add(\w+)\(\);", (sources / "main.cc").read_text())
    ops = sorted(inspect_model(mcu_artifact / "model.tflite")["op_histogram"])
    from edgetl.bundling.c_source import resolver_method

    assert registered == [resolver_method(op)[3:] for op in ops] and len(registered) == len(ops)
    assert f"MicroMutableOpResolver<{len(ops)}>" in (sources / "main.cc").read_text()
    assert np.frombuffer(data, np.uint8)[4:8].tobytes() == b"TFL3"
