"""ONNX Runtime GPU execution providers: discovery, the reason each one is skipped, and bench rows.

On a CPU-only machine (onnxruntime's CPU build) the CUDA and TensorRT rows of a bench report are
skipped with the reason; what a GPU machine measures is run by benchmarks/gpu_check.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetl.targets.ort import (GPU_PROVIDERS, PROVIDER_CHAIN, OnnxRuntimeSession, ProviderUnavailableError,
                                provider_status)
from tests.conftest import write_image_folder

ort = pytest.importorskip("onnxruntime")


def mean_colour_classifier(path: Path, size: int = 32) -> Path:
    """A real 3-class ONNX model: softmax over the mean of each colour channel (red, green, blue squares)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2], keepdims=0),
         helper.make_node("Softmax", ["mean"], ["probs"], axis=-1)],
        "mean_colour", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.skipif(ort.get_device() != "CPU", reason="an onnxruntime GPU build is installed")
def test_the_cpu_build_says_which_gpu_providers_it_lacks():
    assert ort.get_available_providers()[-1] == "CPUExecutionProvider"
    status = provider_status()
    assert list(status) == list(GPU_PROVIDERS)
    for provider, reason in status.items():
        assert reason.startswith(f"{provider} not available (onnxruntime CPU build; install onnxruntime-gpu")


def test_each_reason_a_gpu_provider_cannot_be_used():
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_status(gpu_build, "GPU", gpu_visible=True) == {p: None for p in GPU_PROVIDERS}
    no_gpu = provider_status(gpu_build, "GPU", gpu_visible=False)
    assert no_gpu["CUDAExecutionProvider"] == "CUDAExecutionProvider is in this onnxruntime build, but no NVIDIA GPU is visible"
    without_tensorrt = provider_status(gpu_build[1:], "GPU", gpu_visible=True)
    assert without_tensorrt == {"CUDAExecutionProvider": None, "TensorrtExecutionProvider":
                                "TensorrtExecutionProvider not available (this onnxruntime build has "
                                "CUDAExecutionProvider, CPUExecutionProvider)"}


def test_a_session_on_an_unusable_provider_fails_with_the_reason_and_the_cpu_one_runs(tmp_path):
    path = mean_colour_classifier(tmp_path / "m.onnx")
    session = OnnxRuntimeSession(path)
    assert session.providers == ["CPUExecutionProvider"]
    red = np.zeros((1, 32, 32, 3), np.float32)
    red[..., 0] = 1.0
    assert int(np.argmax(session.predict(red))) == 0
    for provider, reason in provider_status().items():
        if reason is None:
            continue
        with pytest.raises(ProviderUnavailableError) as caught:
            OnnxRuntimeSession(path, providers=list(PROVIDER_CHAIN[provider]))
        assert str(caught.value) == reason


@pytest.mark.skipif(any(r is None for r in provider_status().values()), reason="a GPU provider is usable here")
def test_bench_adds_a_skipped_row_per_gpu_provider_with_its_reason(tmp_path):
    from edgetl.runner.bench import BenchOptions, run_bench
    from edgetl.runner.report_render import render_markdown

    path = mean_colour_classifier(tmp_path / "colour.onnx")
    data = write_image_folder(tmp_path / "data", classes=3, per_class=4, size=32)
    labels = tmp_path / "labels.txt"
    labels.write_text("class_0\nclass_1\nclass_2\n")  # red, green and blue squares
    report = run_bench([str(path)], BenchOptions(threads=(1,), min_runs=3, warmup=0, min_seconds=0.0,
                                                 throughput_batch=1, data=data, labels=labels, mean=127.5, std=127.5,
                                                 targets=("x86-cpu", "cuda"), out=tmp_path / "report"))
    rows = {a["name"]: a for a in report["artifacts"]}
    # x86-cpu lists OpenVINO too (a declared dependency on x86), so its row follows the GPU ones
    assert list(rows) == ["colour.onnx", "colour.onnx@cuda", "colour.onnx@tensorrt", "colour.onnx@openvino"]
    assert rows["colour.onnx@openvino"]["parity"]["accuracy"] == 1.0
    assert rows["colour.onnx"]["provider"] == "CPUExecutionProvider" and rows["colour.onnx"]["parity"]["accuracy"] == 1.0
    for name, provider in (("colour.onnx@cuda", "CUDAExecutionProvider"),
                           ("colour.onnx@tensorrt", "TensorrtExecutionProvider")):
        assert rows[name]["provider"] == provider and rows[name]["latency"] is None
        assert rows[name]["skipped"] == provider_status()[provider]
    markdown = render_markdown(report)
    assert f"colour.onnx@cuda: {provider_status()['CUDAExecutionProvider']}" in markdown
    assert report["recommendations"]["x86-cpu"]["artifact"] == "colour.onnx"


def test_a_row_measured_on_a_gpu_provider_is_recommended_only_for_targets_that_list_it():
    from edgetl.runner.ranking import recommend
    from edgetl.targets.profiles import load_profile

    def row(name: str, provider: str, p50: float) -> dict:
        return {"name": name, "path": name, "provider": provider, "bytes": 1000, "skipped": None,
                "gate": {"passed": True},
                "target_checks": {"x86-cpu": [], "cuda": []}, "latency": [{"threads": 1, "p50_ms": p50}]}

    rows = [row("m.onnx", "CPUExecutionProvider", 2.0), row("m.onnx@cuda", "CUDAExecutionProvider", 0.3)]
    chosen = recommend(rows, [load_profile("x86-cpu"), load_profile("cuda")])
    assert chosen["x86-cpu"]["artifact"] == "m.onnx" and chosen["cuda"]["artifact"] == "m.onnx@cuda"
