"""ONNX Runtime for .onnx files; execution providers are discovered at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgetl.errors import InputError
from edgetl.targets.base import TensorInfo, dequantize, quantize

_ONNX_TO_NUMPY = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
                  "tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def _info(arg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorInfo(name=arg.name, shape=shape, dtype=_ONNX_TO_NUMPY.get(arg.type, arg.type))


class OnnxRuntimeSession:
    runtime = "onnxruntime"

    def __init__(self, path: Path, providers: list[str] | None = None, intra_op_threads: int = 0,
                 optimization: str = "all") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own untyped Fail/InvalidGraph exceptions
            raise InputError(f"{path}: ONNX Runtime cannot load this model ({str(exc).splitlines()[0]})") from exc
        self.inputs = [_info(a) for a in self.session.get_inputs()]
        self.outputs = [_info(a) for a in self.session.get_outputs()]

    def prepare(self, images: np.ndarray) -> Callable[[], None]:
        """Build the feed once; the returned call runs one inference (what the latency loop times)."""
        feed = {self.inputs[0].name: quantize(images, self.inputs[0])}
        names = [self.outputs[0].name]
        return lambda: self.session.run(names, feed)

    def predict(self, images: np.ndarray) -> np.ndarray:
        feed = {self.inputs[0].name: quantize(images, self.inputs[0])}
        return dequantize(self.session.run([self.outputs[0].name], feed)[0], self.outputs[0])
