"""Runtimes that execute exported models (installed as `edgetl.targets`).

Each runtime is one module with a Session class (targets/base.py); `open_session` picks it by file
type. Device profiles live in profiles/*.toml (profiles.py), with checks.py and memory.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.errors import InputError


SESSIONS = {  # file suffix -> "module:Class"; adding a runtime is one module and one line here
    ".tflite": "edgetl.targets.litert:LiteRTSession",
    ".onnx": "edgetl.targets.ort:OnnxRuntimeSession",
    ".keras": "edgetl.targets.keras_ref:KerasSession",
}


def open_session(path: Path, **options: Any) -> Any:
    """Open a model file in its runtime: .tflite in LiteRT, .onnx in ONNX Runtime, .keras in tf_keras."""
    import importlib

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    if path.suffix not in SESSIONS:
        raise InputError(f"{path}: unknown model type; expected {', '.join(SESSIONS)}")
    module, name = SESSIONS[path.suffix].split(":")
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
    return found

