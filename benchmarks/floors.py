"""The compute floors of benchmarks/suite.py: this machine's practical fp32 and int8 peaks.

Each peak is one dense [256x1024]x[1024x1024] matmul file, timed like the models (interleaved, batch 1
of that input, the same thread count), in both runtimes. The fp32 peak is LiteRT's (XNNPACK); the int8
peak is the faster of LiteRT's full-int8 FULLY_CONNECTED (XNNPACK QS8 GEMM) and ONNX Runtime's
quantize_static QDQ MatMul (MLAS integer GEMM); both use AVX-512 VNNI where the CPU has it. A model's
floor is its MACs divided by the peak of its arithmetic: an int8 file is held against the int8 floor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import interleaved_p50

ROWS, INNER, COLS = 256, 1024, 1024


def _weight() -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.03, (INNER, COLS)).astype(np.float32)


def _activations(count: int = 1) -> np.ndarray:
    return np.random.default_rng(1).normal(0, 1, (count, ROWS, INNER)).astype(np.float32)


def _tflite_matmul(path: Path, int8: bool) -> Path:
    from edgetl.tf_env import tf

    t = tf()
    weight = t.constant(_weight())
    spec = t.TensorSpec([ROWS, INNER], t.float32, name="x")
    function = t.function(lambda x: t.matmul(x, weight), input_signature=[spec], autograph=False)
    converter = t.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
    if int8:
        converter.optimizations = [t.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([a] for a in _activations(8))
        converter.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = t.int8
    path.write_bytes(converter.convert())
    return path


def _onnx_int8_matmul(scratch: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, INNER])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [ROWS, COLS])],
        [numpy_helper.from_array(_weight(), "w")])
    float_path, int8_path = scratch / "matmul.onnx", scratch / "matmul-int8.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), float_path)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": a} for a in _activations(8)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    quantize_static(str(float_path), str(int8_path), Reader())  # ORT's defaults: QDQ, int8, MinMax
    return int8_path


def peak_mac_rates(scratch: Path, threads: int, min_time: float) -> dict[str, float]:
    """MAC/s of the matmul: fp32 in LiteRT, int8 in LiteRT and ONNX Runtime, timed side by side."""
    from edgetl.targets import open_session

    files = {"fp32_litert": _tflite_matmul(scratch / "matmul.tflite", int8=False),
             "int8_litert": _tflite_matmul(scratch / "matmul-int8.tflite", int8=True),
             "int8_ort": _onnx_int8_matmul(scratch)}
    openers: dict[str, Any] = {
        key: (lambda p=path: open_session(p, num_threads=threads)) if path.suffix == ".tflite"
        else (lambda p=path: open_session(p, intra_op_threads=threads))
        for key, path in files.items()}
    p50 = interleaved_p50(openers, _activations(1)[0], min_time)[0]
    return {key: ROWS * INNER * COLS / (ms / 1000.0) for key, ms in p50.items()}
