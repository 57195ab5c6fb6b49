"""Runtimes that execute exported models (installed as `edgetl.targets`).

Each runtime is one module with a Session class (targets/base.py); `open_session` picks it by file
type. Device profiles and the benchmarking runner arrive with issue #5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.errors import InputError


def open_session(path: Path, **options: Any) -> Any:
    """Open a .tflite file in LiteRT or an .onnx file in ONNX Runtime."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    if path.suffix == ".tflite":
        from edgetl.targets.litert import LiteRTSession

        return LiteRTSession(path, **options)
    if path.suffix == ".onnx":
        from edgetl.targets.ort import OnnxRuntimeSession

        return OnnxRuntimeSession(path, **options)
    raise InputError(f"{path}: unknown model type; expected .tflite or .onnx")
