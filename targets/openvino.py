"""OpenVINO's CPU plugin for .onnx files (Intel's runtime; PyPI `openvino`), the third x86 runtime.

The file is read as it was exported (float, fp16, dynamic-range or QDQ int8 ONNX: OpenVINO runs QDQ
graphs in int8 on VNNI) and compiled once per batch size with a static shape, as an app that reshapes
to its batch does. Compiled for latency (`PERFORMANCE_HINT=LATENCY`, one stream) with float32
inference precision: on CPUs with AMX or AVX512-FP16 OpenVINO would otherwise run a float model in
bf16/fp16, and parity would measure that instead of the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgetl.errors import InputError
from edgetl.targets.base import TensorInfo, dequantize, quantize

_OV_TO_NUMPY = {"f32": "float32", "f16": "float16", "i8": "int8", "u8": "uint8", "i64": "int64", "i32": "int32"}


def unavailable_reason() -> str | None:
    """None when OpenVINO's CPU plugin can run here, else why (never raises)."""
    try:
        import openvino
    except ImportError as exc:
        return f"openvino is not installed ({exc}); pip install openvino (x86-64 and arm64 wheels)"
    try:
        devices = openvino.Core().available_devices
    except Exception as exc:  # the plugin's shared libraries failed to load
        return f"OpenVINO cannot start ({str(exc).splitlines()[0]})"
    return None if "CPU" in devices else f"OpenVINO found no CPU device here (devices: {', '.join(devices) or 'none'})"


def _info(port: Any) -> TensorInfo:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    element = port.get_element_type().get_type_name()
    return TensorInfo(name=port.any_name, shape=shape, dtype=_OV_TO_NUMPY.get(element, element))


class OpenVINOSession:
    runtime = "openvino"

    def __init__(self, path: Path, intra_op_threads: int = 0) -> None:
        import openvino

        self.core = openvino.Core()
        try:
            self.model = self.core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises plain RuntimeErrors for unreadable or unsupported graphs
            raise InputError(f"{path}: OpenVINO cannot read this model ({str(exc).splitlines()[0]})") from exc
        self.path = path
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                       "INFERENCE_NUM_THREADS": int(intra_op_threads)}  # 0: OpenVINO picks (the physical cores)
        self.inputs = [_info(port) for port in self.model.inputs]
        self.outputs = [_info(port) for port in self.model.outputs]
        self._compiled: dict[int, Any] = {}
        self._request(1)  # compile now: a model the plugin cannot run fails here, when the session opens

    def _request(self, batch: int) -> Any:
        """An infer request of the model compiled for `batch` images (static shapes, compiled once)."""
        if batch not in self._compiled:
            model = self.model.clone()
            if self.inputs[0].shape[0] is None:
                model.reshape({model.inputs[0]: [batch, *self.inputs[0].shape[1:]]})
            try:
                compiled = self.core.compile_model(model, "CPU", self.config)
            except Exception as exc:
                raise InputError(f"{self.path}: OpenVINO's CPU plugin cannot compile this model "
                                 f"({str(exc).splitlines()[0]})") from exc
            self._compiled[batch] = compiled.create_infer_request()
        return self._compiled[batch]

    def prepare(self, images: np.ndarray) -> Callable[[], None]:
        """Set the input once; the returned call runs one inference (what the latency loop times)."""
        request = self._request(len(images))
        request.set_input_tensor(0, _tensor(quantize(images, self.inputs[0])))
        return request.infer

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.predict_all(images)[0]

    def predict_all(self, images: np.ndarray) -> list[np.ndarray]:
        request = self._request(len(images))
        request.infer({0: quantize(images, self.inputs[0])})
        return [dequantize(np.array(request.get_output_tensor(i).data), info) for i, info in enumerate(self.outputs)]


def _tensor(values: np.ndarray) -> Any:
    import openvino

    return openvino.Tensor(np.ascontiguousarray(values), shared_memory=False)
