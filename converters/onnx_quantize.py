"""ONNX -> ONNX quantization with ONNX Runtime's tooling.

`int8`: static QDQ, per-channel int8 weights and uint8 activations (ONNX Runtime's recommended
U8S8 format on x86), calibrated with min/max on the same representative images as TFLite int8.
`dynamic`: int8 weights, activations quantized at run time; ONNX Runtime's CPU kernels only
support this for MatMul/Gemm (its ConvInteger wants uint8 weights and is slower than float Conv),
so convolutions stay float, and the manifest says so.
Pre-processing runs without symbolic shape inference, which would need `sympy`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DYNAMIC_OP_TYPES = ["MatMul", "Gemm"]


def quantize(float_path: Path, out: Path, mode: str, calibration: np.ndarray | None) -> dict[str, Any]:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name(out.stem + ".prepared.onnx")
    try:
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=DYNAMIC_OP_TYPES)
            return {"quantization": "dynamic", "quantized_op_types": DYNAMIC_OP_TYPES}

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(calibration[i:i + 1] for i in range(len(calibration)))

            def get_next(self) -> dict[str, np.ndarray] | None:
                batch = next(self.batches, None)
                return None if batch is None else {"image": batch.astype(np.float32)}

        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        return {"quantization": "static QDQ", "weights": "int8 per-channel", "activations": "uint8",
                "calibration_images": int(len(calibration))}
    finally:
        prepared.unlink(missing_ok=True)
