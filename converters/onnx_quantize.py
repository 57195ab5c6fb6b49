"""ONNX -> ONNX quantization with ONNX Runtime's tooling.

`int8`: static QDQ, per-channel int8 weights and uint8 activations (ONNX Runtime's recommended
U8S8 format on x86), calibrated with min/max on the same representative images as TFLite int8.
`dynamic`: 8-bit weights for Conv, MatMul and Gemm, activations quantized at run time, like
TFLite's dynamic range mode: it is for size. ONNX Runtime's CPU ConvInteger kernel takes only uint8
weights, so weights are uint8 (per-tensor). Measured on the demo model it is ~3x slower than float
(1.19 vs 0.37 ms): the bench report shows it, and int8 (static) is the mode for speed.
Pre-processing runs without symbolic shape inference, which would need `sympy`. After static
quantization, multiplications by constants are folded into dequantization scales (onnx_passes.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DYNAMIC_OP_TYPES = ["Conv", "MatMul", "Gemm"]


def quantize(float_path: Path, out: Path, mode: str, calibration: np.ndarray | None, per_channel: bool = True,
             float_fallback: tuple[str, ...] = ()) -> dict[str, Any]:
    """`float_fallback`: Keras layer names whose nodes (tf2onnx names them model/<layer>/...) stay float."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name(out.stem + ".prepared.onnx")
    try:
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QUInt8, per_channel=False,
                             op_types_to_quantize=DYNAMIC_OP_TYPES)
            return {"quantization": "dynamic", "weights": "uint8 per-tensor", "quantized_op_types": DYNAMIC_OP_TYPES}

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(calibration[i:i + 1] for i in range(len(calibration)))

            def get_next(self) -> dict[str, np.ndarray] | None:
                batch = next(self.batches, None)
                return None if batch is None else {"image": batch.astype(np.float32)}

        excluded = _nodes_of(prepared, float_fallback)
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded)
        folded = _fold_constant_scales(out)
        facts = {"quantization": "static QDQ", "weights": f"int8 per-{'channel' if per_channel else 'tensor'}",
                 "activations": "uint8", "calibration_images": int(len(calibration)), "constant_scales_folded": folded}
        return facts | ({"float_nodes": excluded} if excluded else {})
    finally:
        prepared.unlink(missing_ok=True)


def _fold_constant_scales(path: Path) -> int:
    import onnx

    from edgetl.converters.onnx_passes import fold_constant_scales

    model = onnx.load(str(path))
    folded = fold_constant_scales(model)
    if folded:
        onnx.save(model, str(path))
    return folded


def _nodes_of(path: Path, layers: tuple[str, ...]) -> list[str]:
    if not layers:
        return []
    import onnx

    from edgetl.errors import CheckFailedError

    names = [node.name for node in onnx.load(str(path)).graph.node]
    found = sorted({n for n in names for layer in layers if f"/{layer}/" in n})
    if not found:
        raise CheckFailedError(f"float fallback: no ONNX node belongs to the layers {', '.join(layers)}")
    return found
