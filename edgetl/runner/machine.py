"""What machine a benchmark ran on: CPU model, ISA flags that matter for inference, library versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
                     "amx_bf16", "asimd", "asimddp", "i8mm", "sve")


def machine_info() -> dict[str, Any]:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    cpu = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        pass
    versions = {}
    for dist in ("edgetl", "ai-edge-litert", "onnxruntime", "openvino", "tensorflow", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "missing"
    return {"cpu": cpu, "isa_flags": [f for f in INTERESTING_FLAGS if f in flags], "cores": os.cpu_count(),
            "machine": platform.machine(), "system": platform.system(), "python": platform.python_version(),
            "versions": versions}
