"""ONNX -> ONNX quantization with ONNX Runtime's tooling.

`int8`: static QDQ, per-channel int8 weights and uint8 activations (ONNX Runtime's recommended
U8S8 format on x86), calibrated with min/max on the same representative images as TFLite int8.
Weights use 7 bits (-64..64, ONNX Runtime's `reduce_range`). x86 CPUs without VNNI (AVX2, AVX-512
without VNNI) multiply u8 x s8 with vpmaddubsw, which adds each pair of products into int16 and
saturates: with 8-bit weights 2 * 255 * 127 overflows, with 7-bit weights 2 * 255 * 64 fits. ONNX
Runtime's and OpenVINO's int8 kernels both take that path there, and an ONNX file runs wherever it is
copied, so every file gets 7-bit weights. Measured (the demo's EfficientNet-Lite0, AMD EPYC Zen 3,
AVX2, no VNNI): 8-bit weights 81.9 % in ONNX Runtime and 75.5 % in OpenVINO against 98.3 % float (the
same file simulated in float: 98.3 %); 7-bit weights 98.3 % and 97.8 %.
`dynamic`: 8-bit weights for Conv, MatMul and Gemm, activations quantized at run time, like
TFLite's dynamic range mode: it is for size. ONNX Runtime's CPU ConvInteger kernel takes only uint8
weights, so weights are uint8 (per-tensor). Measured on the demo model it is ~3x slower than float
(1.19 vs 0.37 ms): the bench report shows it, and int8 (static) is the mode for speed.
Pre-processing runs without symbolic shape inference, which would need `sympy`. After static
quantization, multiplications by constants are folded into dequantization scales, and weights that came
quantized to 8 bits in the graph (QAT's fake-quant nodes) are requantized to 7 bits (onnx_passes.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DYNAMIC_OP_TYPES = ["Conv", "MatMul", "Gemm"]
# Largest |int8 weight| x86 without VNNI adds without saturating: two uint8 x int8 products in int16, 2 * 255 * 64.
WEIGHT_PEAK = 64


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
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded)
        folded, narrowed = _quantized_graph_passes(out)
        facts = {"quantization": "static QDQ",
                 "weights": f"int8 per-{'channel' if per_channel else 'tensor'}, 7-bit range (no int16 saturation "
                            "on x86 without VNNI)",
                 "activations": "uint8", "calibration_images": int(len(calibration)), "constant_scales_folded": folded,
                 "weights_narrowed_to_7_bits": narrowed}
        return facts | ({"float_nodes": excluded} if excluded else {})
    finally:
        prepared.unlink(missing_ok=True)


def _quantized_graph_passes(path: Path) -> tuple[int, int]:
    """Fold constant multiplications into dequantization scales; bring weights that arrived quantized to
    8 bits (a QAT graph's) to 7 bits. Returns how many of each."""
    import onnx

    from edgetl.converters.onnx_passes import fold_constant_scales, narrow_weights

    model = onnx.load(str(path))
    folded = fold_constant_scales(model)
    narrowed = narrow_weights(model, WEIGHT_PEAK)
    if folded or narrowed:
        onnx.save(model, str(path))
    return folded, narrowed


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
