"""LiteRT (`ai_edge_litert`), the edge runtime for .tflite files. XNNPACK is its default CPU delegate."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgetl.errors import InputError
from edgetl.targets.base import TensorInfo, dequantize, quantize


def _info(detail: dict) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(name=detail["name"], shape=tuple(int(d) for d in detail["shape"]),
                      dtype=np.dtype(detail["dtype"]).name, scale=float(scale), zero_point=int(zero_point))


class LiteRTSession:
    runtime = "litert"

    def __init__(self, path: Path, num_threads: int | None = None, xnnpack: bool = True) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # Without XNNPACK, LiteRT runs its builtin (reference/optimized) kernels: a baseline, and what
        # a device without the delegate gets.
        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads,
                                           experimental_op_resolver_type=resolver)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: LiteRT cannot load this model ({str(exc).splitlines()[0]})") from exc
        self._input = self.interpreter.get_input_details()[0]
        self._batches = True  # False once the graph refused a batch larger than its exported 1
        self.inputs = [_info(d) for d in self.interpreter.get_input_details()]
        self.outputs = [_info(d) for d in self.interpreter.get_output_details()]

    def prepare(self, images: np.ndarray) -> Callable[[], None]:
        """Set the input once; the returned call runs one inference (what the latency loop times)."""
        self._set_input(images)
        return self.interpreter.invoke

    def _set_input(self, images: np.ndarray) -> None:
        index = self._input["index"]
        shape = [len(images), *self._input["shape"][1:]]
        if list(self.interpreter.get_input_details()[0]["shape"]) != shape:  # models are exported with batch 1
            self.interpreter.resize_tensor_input(index, shape)
            self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(index, quantize(images, self.inputs[0]))

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.predict_all(images, 1)[0]

    def predict_all(self, images: np.ndarray, count: int | None = None) -> list[np.ndarray]:
        """The first `count` outputs (default: all; a multi-task model has one per task), in output order."""
        if len(images) > 1 and not self._batches:
            per_image = [self.predict_all(images[i:i + 1], count) for i in range(len(images))]
            return [np.concatenate(parts) for parts in zip(*per_image)]
        try:
            self._set_input(images)
        except RuntimeError:  # a graph whose shapes are fixed to batch 1 (e.g. a Reshape): one image at a time
            self._batches = False
            self.interpreter.resize_tensor_input(self._input["index"], [1, *self._input["shape"][1:]])
            self.interpreter.allocate_tensors()
            return self.predict_all(images, count)
        self.interpreter.invoke()
        details = self.interpreter.get_output_details()[:count]
        return [dequantize(self.interpreter.get_tensor(d["index"]), info) for d, info in zip(details, self.outputs)]
