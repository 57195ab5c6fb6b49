"""OpenVINO, the third x86 runtime: every ONNX export runs in its CPU plugin as it does in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.errors import InputError
from edgetl.targets import open_session, runtime_availability

# How far OpenVINO may be from ONNX Runtime on the same file: float kernels differ in summation order only;
# fp16: ONNX Runtime computes in half precision, OpenVINO in float32 with the half-precision weights
# (measured 5e-3); quantized ones may round an activation the other way (requantization is fused differently).
MAX_PROB_DIFF = {"none": 1e-4, "fp16": 1e-2}
MIN_AGREEMENT = {"dynamic": 0.9, "int8": 0.9}


def test_openvino_is_installed_where_edgetl_supports_it():
    # A dependency of edgetl on x86-64 Linux: CI must run the OpenVINO rows, not skip them.
    assert runtime_availability()["openvino"]["unavailable"] is None


@pytest.mark.parametrize("mode", ["none", "fp16", "dynamic", "int8"])
def test_every_onnx_export_runs_in_openvino_like_in_onnx_runtime(run, exported, mode):
    from edgetl.artifacts.run_dir import Run, load_images

    model = run / "artifacts" / f"onnx-{mode}" / "model.onnx"
    source = Run.open(run)
    images = load_images(list(source.splits[1].paths), source.image_size, source.preprocessing)
    openvino = open_session(model, runtime="openvino", intra_op_threads=1)
    assert openvino.runtime == "openvino" and openvino.inputs[0].shape[1:] == images.shape[1:]
    reference = open_session(model).predict(images)
    batched = openvino.predict(images)  # compiled for this batch size
    one_by_one = np.concatenate([openvino.predict(images[i:i + 1]) for i in range(len(images))])
    assert batched.shape == reference.shape
    if mode != "dynamic":  # dynamic-range quantization scales activations by the whole batch's range
        assert np.allclose(batched, one_by_one, atol=1e-5)
    # int8: the output is dequantized from steps of 1/255, so each of the classes may round half a step off.
    sum_tolerance = batched.shape[1] * 0.5 / 255 + 1e-6 if mode == "int8" else 1e-3
    assert np.allclose(batched.sum(axis=1), 1.0, atol=sum_tolerance)
    if mode in MAX_PROB_DIFF:
        assert np.abs(batched - reference).max() <= MAX_PROB_DIFF[mode]
    else:
        agreement = float(np.mean(batched.argmax(1) == reference.argmax(1)))
        assert agreement >= MIN_AGREEMENT[mode], agreement
    infer = openvino.prepare(images[:1])  # what the latency loop times: one inference on a set input
    infer()


def test_files_openvino_cannot_run_are_one_line_errors(tmp_path, run, exported):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(InputError) as caught:
        open_session(broken, runtime="openvino")
    assert str(broken) in str(caught.value) and "OpenVINO" in str(caught.value) and "\n" not in str(caught.value)
    tflite = run / "artifacts" / "tflite-none" / "model.tflite"
    with pytest.raises(InputError, match="openvino runs .onnx files"):
        open_session(tflite, runtime="openvino")
