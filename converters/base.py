"""The converter protocol, its options and its registry.

A converter turns a trained run into one model file. `check` is cheap and runs before any work;
`convert` writes the file. Verification of what was written is separate (edgetl/runner/verification.py),
so every converter is held to the same checks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

FORMATS = ("tflite", "onnx")
QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8")
IO_DTYPES = ("float32", "int8", "uint8")
DEFAULT_OPSET = 17


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    format: str
    quantize: str = "none"
    io_dtype: str = "float32"  # int8 TFLite only: the input/output tensor type
    calibration_size: int = 200  # representative images, stratified by class, from the training split
    verify_size: int = 64  # validation images the exported file is compared on
    opset: int = DEFAULT_OPSET  # ONNX only
    nchw: bool = False  # ONNX only: add an NCHW input in front of the NHWC graph
    seed: int = 0
    per_channel: bool = True  # int8: per-channel weight scales (False: one scale per tensor)
    float_fallback: tuple[str, ...] = ()  # int8: Keras layer names whose ops stay float (selective quantization)

    def problems(self) -> list[str]:
        found = []
        if self.format not in FORMATS:
            found.append(f"--format: must be one of {', '.join(FORMATS)}")
        if self.quantize not in QUANTIZE_MODES:
            found.append(f"--quantize: must be one of {', '.join(QUANTIZE_MODES)}")
        if self.io_dtype not in IO_DTYPES:
            found.append(f"--io-dtype: must be one of {', '.join(IO_DTYPES)}")
        elif self.io_dtype != "float32" and not (self.format == "tflite" and self.quantize == "int8"):
            found.append("--io-dtype int8/uint8 needs --format tflite --quantize int8")
        if self.calibration_size < 1:
            found.append("--calibration-size: must be >= 1")
        if self.verify_size < 1:
            found.append("--verify-size: must be >= 1")
        if not 13 <= self.opset <= 21:
            found.append(f"--opset: {self.opset} is outside the supported 13..21")
        if self.nchw and self.format != "onnx":
            found.append("--nchw applies to --format onnx only")
        if (self.float_fallback or not self.per_channel) and self.quantize != "int8":
            found.append("per-tensor weights and float fallback apply to --quantize int8 only")
        if self.float_fallback and self.io_dtype != "float32":
            found.append("float fallback layers need float32 input/output (--io-dtype float32)")
        return found

    @property
    def variant(self) -> str:
        """The artifact folder name under RUN/artifacts/."""
        suffix = "" if self.io_dtype == "float32" else f"-{self.io_dtype}io"
        suffix += "" if self.per_channel else "-pertensor"
        suffix += f"-fallback{len(self.float_fallback)}" if self.float_fallback else ""
        return f"{self.format}-{self.quantize}{suffix}{'-nchw' if self.nchw else ''}"


@dataclasses.dataclass(frozen=True)
class ConversionInput:
    """What a converter needs from a run: the Keras model, its input size, and calibration data."""

    model: Any
    image_size: int
    labels: list[str]
    calibration: Any  # np.ndarray of normalized images for int8 calibration, else None


class Converter(Protocol):
    format: str
    suffix: str
    # True: a quantization-aware-trained model's fake-quant ranges are what this converter quantizes with.
    # False: it quantizes a float graph with its own tooling, so it gets QAT's weights as plain float layers.
    reads_fake_quant: bool

    def check(self, options: ExportOptions) -> list[str]:
        """Problems found before any work (unsupported mode, missing package)."""

    def convert(self, source: ConversionInput, options: ExportOptions, out: Path) -> dict[str, Any]:
        """Write the model file at `out`; return facts for the manifest (e.g. tool versions, warnings)."""
