"""Runtimes that execute exported models (installed as `edgetl.targets`).

Each runtime is one module with a Session class (targets/base.py) and one line in RUNTIMES;
`open_session` picks it by file type, or by name (`tflm`: a .tflite file in TensorFlow Lite Micro;
`openvino`: an .onnx file in OpenVINO).
Device profiles live in profiles/*.toml (profiles.py), with checks.py and memory.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.errors import InputError


RUNTIMES = {  # runtime -> (file suffix, "module:Class"); adding a runtime is one module and one line here
    "litert": (".tflite", "edgetl.targets.litert:LiteRTSession"),
    "onnxruntime": (".onnx", "edgetl.targets.ort:OnnxRuntimeSession"),
    "keras": (".keras", "edgetl.targets.keras_ref:KerasSession"),
    "tflm": (".tflite", "edgetl.targets.tflm:TFLMSession"),  # TensorFlow Lite Micro, for microcontrollers
    "openvino": (".onnx", "edgetl.targets.openvino:OpenVINOSession"),  # Intel's runtime, x86 CPUs
}
DEFAULT_RUNTIME = {".tflite": "litert", ".onnx": "onnxruntime", ".keras": "keras"}


def open_session(path: Path, runtime: str | None = None, **options: Any) -> Any:
    """Open a model file in a runtime: by default .tflite in LiteRT, .onnx in ONNX Runtime, .keras in
    tf_keras; `runtime="tflm"` runs a .tflite file in TensorFlow Lite Micro, `"openvino"` an .onnx file in OpenVINO."""
    import importlib

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    if path.suffix not in DEFAULT_RUNTIME:
        raise InputError(f"{path}: unknown model type; expected {', '.join(DEFAULT_RUNTIME)}")
    suffix, where = RUNTIMES[runtime or DEFAULT_RUNTIME[path.suffix]]
    if suffix != path.suffix:
        raise InputError(f"{path}: {runtime} runs {suffix} files")
    module, name = where.split(":")
    return getattr(importlib.import_module(module), name)(path, **options)


def runtime_availability() -> dict[str, dict[str, Any]]:
    """Each runtime edgetl can use here, and if it cannot, why (never an exception)."""
    found: dict[str, dict[str, Any]] = {}
    try:
        import ai_edge_litert.interpreter  # noqa: F401

        found["litert"] = {"unavailable": None}
    except ImportError as exc:
        found["litert"] = {"unavailable": f"ai-edge-litert is not installed ({exc}); pip install ai-edge-litert"}
    try:
        import onnxruntime

        from edgetl.targets.ort import provider_status

        providers = onnxruntime.get_available_providers()
        found["onnxruntime"] = {"unavailable": None, "providers": providers, "device": onnxruntime.get_device()}
        for provider, reason in provider_status().items():
            found[f"onnxruntime:{provider}"] = {"unavailable": reason}
    except ImportError as exc:
        found["onnxruntime"] = {"unavailable": f"onnxruntime is not installed ({exc}); pip install onnxruntime"}
    from edgetl.targets import openvino, tflm

    found["tflm"] = {"unavailable": tflm.unavailable_reason()}
    found["openvino"] = {"unavailable": openvino.unavailable_reason()}
    return found

