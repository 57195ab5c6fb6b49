"""ONNX Runtime for .onnx files; execution providers are discovered at run time.

GPU providers (CUDA, TensorRT) are used when this onnxruntime build has them (the `onnxruntime-gpu`
package), an NVIDIA GPU is visible, and the session really starts on them: ONNX Runtime silently falls
back to the CPU when a provider's libraries (CUDA, cuDNN, TensorRT) fail to load, so the providers a
session actually got are checked after it opens. Each reason a provider cannot be used is one line
for the report, e.g. "CUDAExecutionProvider not available (onnxruntime CPU build)".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from edgetl.errors import EdgetlError, InputError
from edgetl.targets.base import TensorInfo, dequantize, quantize

_ONNX_TO_NUMPY = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
                  "tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(int32)": "int32"}


GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
# What a session is opened with for each provider: TensorRT hands the nodes it cannot run to CUDA, then the CPU.
PROVIDER_CHAIN = {
    "CPUExecutionProvider": ("CPUExecutionProvider",),
    "CUDAExecutionProvider": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "TensorrtExecutionProvider": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}
SHORT_NAMES = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}


class ProviderUnavailableError(EdgetlError):
    """An execution provider was asked for that this machine or onnxruntime build cannot give."""


def nvidia_gpu_visible() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/version")


def provider_status(available: list[str] | None = None, device: str | None = None,
                    gpu_visible: bool | None = None) -> dict[str, str | None]:
    """For each GPU provider: None when a session may use it, else the reason it cannot (never raises).

    The arguments default to what this machine's onnxruntime reports; tests pass them to check each reason."""
    import onnxruntime as ort

    available = ort.get_available_providers() if available is None else available
    device = ort.get_device() if device is None else device
    gpu_visible = nvidia_gpu_visible() if gpu_visible is None else gpu_visible
    status: dict[str, str | None] = {}
    for provider in GPU_PROVIDERS:
        if provider not in available:
            build = ("onnxruntime CPU build; install onnxruntime-gpu on a machine with an NVIDIA GPU"
                     if device == "CPU" else f"this onnxruntime build has {', '.join(available)}")
            status[provider] = f"{provider} not available ({build})"
        elif not gpu_visible:
            status[provider] = f"{provider} is in this onnxruntime build, but no NVIDIA GPU is visible"
        else:
            status[provider] = None
    return status


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
        providers = list(providers or ["CPUExecutionProvider"])
        wanted = providers[0]
        if wanted in GPU_PROVIDERS and provider_status().get(wanted):
            raise ProviderUnavailableError(provider_status()[wanted])
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # ORT raises its own untyped Fail/InvalidGraph exceptions
            if wanted in GPU_PROVIDERS:
                raise ProviderUnavailableError(f"{wanted} failed to start a session ({str(exc).splitlines()[0]})") from exc
            raise InputError(f"{path}: ONNX Runtime cannot load this model ({str(exc).splitlines()[0]})") from exc
        self.providers = self.session.get_providers()  # what the session really runs on
        if wanted not in self.providers:
            raise ProviderUnavailableError(f"{wanted} failed to initialize (its CUDA/cuDNN/TensorRT libraries did not "
                                           f"load?); ONNX Runtime fell back to {', '.join(self.providers)}")
        self.inputs = [_info(a) for a in self.session.get_inputs()]
        self.outputs = [_info(a) for a in self.session.get_outputs()]

    def prepare(self, images: np.ndarray) -> Callable[[], None]:
        """Build the feed once; the returned call runs one inference (what the latency loop times)."""
        feed = {self.inputs[0].name: quantize(images, self.inputs[0])}
        names = [output.name for output in self.outputs]  # every output (a multi-task model has one per task)
        return lambda: self.session.run(names, feed)

    def predict(self, images: np.ndarray) -> np.ndarray:
        feed = {self.inputs[0].name: quantize(images, self.inputs[0])}
        return dequantize(self.session.run([self.outputs[0].name], feed)[0], self.outputs[0])

    def predict_all(self, images: np.ndarray) -> list[np.ndarray]:
        feed = {self.inputs[0].name: quantize(images, self.inputs[0])}
        values = self.session.run([output.name for output in self.outputs], feed)
        return [dequantize(value, info) for value, info in zip(values, self.outputs)]
