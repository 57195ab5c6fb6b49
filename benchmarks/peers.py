"""The int8 files of the tools a user would pick instead of edgetl, each made with that tool's default recipe.

For a side-by-side benchmark: every function takes the float model (or its path) and images, writes one
file and returns its path. Images are NHWC float32 batches, preprocessed as the model expects (edgetl's
float ONNX and TFLite files take NHWC float input [N, H, W, 3]). Imports are inside the functions, so
importing this module is cheap.

    ort_quantize_static     ONNX Runtime: quant_pre_process + quantize_static defaults (QDQ, int8, per-tensor)
    plain_tflite_int8       TFLiteConverter.from_keras_model, full-integer int8, float I/O, written by hand
    ai_edge_quantizer_int8  Google's AI Edge Quantizer: recipe static_wi8_ai8 on the float .tflite
    nncf_quantize           NNCF: nncf.quantize defaults on the float ONNX (QDQ, for OpenVINO)
    nncf_accuracy_control   NNCF: nncf.quantize_with_accuracy_control on OpenVINO, top-1 within `max_drop`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np


def ort_quantize_static(float_onnx: Path, calibration: np.ndarray, out: Path) -> Path:
    """ONNX Runtime's documented workflow with its defaults: `quant_pre_process` (ORT warns when it was skipped),
    then `quantize_static` with no options: QDQ format, asymmetric int8 activations, symmetric int8 weights,
    per-tensor scales, MinMax calibration over `calibration`, one image a step as ORT's example feeds them.

    One departure: pre-processing's symbolic shape inference needs `sympy`, which edgetl does not install;
    without it the default call raises ImportError and names skip_symbolic_shape=True as the fix. It only
    matters for dynamic shapes in transformers: a CNN's shapes come from ONNX shape inference, which still runs
    (checked: with sympy installed the quantized file has the same nodes and identical outputs).
    """
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = _onnx_input_name(float_onnx)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.images = iter(calibration[i:i + 1] for i in range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self.images, None)
            return None if image is None else {input_name: image}

    prepared = out.with_name(out.stem + ".prepared.onnx")
    try:
        quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), Reader())
    finally:
        prepared.unlink(missing_ok=True)
    return out


def plain_tflite_int8(keras_model: Any, calibration: np.ndarray, out: Path) -> Path:
    """What a user writes by hand, following TensorFlow's full-integer post-training quantization guide:
    `TFLiteConverter.from_keras_model`, `optimizations=[Optimize.DEFAULT]`, a representative dataset yielding
    `calibration` one image at a time, `supported_ops=[TFLITE_BUILTINS_INT8]`. Input and output stay float32
    (the converter's default; the guide's uint8 I/O is left out) so the file compares with float-I/O files:
    a QUANTIZE op in front and a DEQUANTIZE op behind the int8 graph.
    """
    from edgetl.tf_env import tf

    t = tf()

    def representative() -> Iterable[list[np.ndarray]]:
        for i in range(len(calibration)):
            yield [calibration[i:i + 1]]

    converter = t.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [t.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = t.float32
    converter.inference_output_type = t.float32
    out.write_bytes(converter.convert())
    return out


def ai_edge_quantizer_int8(float_tflite: Path, calibration: np.ndarray, out: Path) -> Path:
    """Google's AI Edge Quantizer (PyPI ai-edge-quantizer) as its README shows it: `Quantizer(float .tflite)`,
    `recipe.static_wi8_ai8()` (every supported op: int8 weights, int8 activations, min/max calibration),
    `calibrate()` with its defaults on {signature: [{input: one image}, ...]}, `quantize()`, `export_model()`.
    The README's progress report (model sizes, time) is switched off with `enable_progress_report=False`.
    `float_tflite` must have a SignatureDef, as `TFLiteConverter.from_keras_model(model).convert()` writes.
    """
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    signatures = Interpreter(model_path=str(float_tflite)).get_signature_list()
    if len(signatures) != 1:  # the quantizer calibrates through signature runners
        raise ValueError(f"{float_tflite}: needs exactly one SignatureDef, found {len(signatures)}; "
                         "TFLiteConverter.from_keras_model writes one, edgetl's float .tflite has none")
    (signature, names), = signatures.items()
    (input_name,) = names["inputs"]
    qt = quantizer.Quantizer(str(float_tflite))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    samples = [{input_name: calibration[i:i + 1]} for i in range(len(calibration))]
    result = qt.quantize(qt.calibrate({signature: samples}), enable_progress_report=False)
    result.export_model(str(out), overwrite=True)
    return out


def nncf_quantize(float_onnx: Path, calibration: np.ndarray, out: Path) -> Path:
    """NNCF's basic post-training quantization with its defaults: `nncf.quantize(onnx.load(file), dataset)`
    (preset performance: symmetric per-channel int8 weights, symmetric activations, uint8 where non-negative;
    subset_size 300, so all of a smaller `calibration`; fast bias correction). Writes a QDQ ONNX file meant
    for OpenVINO (which runs every conv in int8); ONNX Runtime fuses only some of its QDQ convs.
    """
    import nncf
    import onnx

    quantized = nncf.quantize(onnx.load(str(float_onnx)), _nncf_dataset(float_onnx, calibration))
    onnx.save(quantized, str(out))
    return out


def nncf_accuracy_control(float_onnx: Path, calibration: np.ndarray, validation_images: np.ndarray,
                          validation_labels: np.ndarray, max_drop: float, out: Path,
                          max_num_iterations: int | None = None) -> Path:
    """NNCF's `nncf.quantize_with_accuracy_control` with its defaults but `max_drop` (absolute, DropType.ABSOLUTE;
    0.005 is half a point of top-1), on OpenVINO's backend, as NNCF's own accuracy-control examples do: the
    float ONNX read by OpenVINO, `nncf.quantize`'s defaults, then, while the drop is larger, the quantizers that
    hurt most, ranked on the validation set, go back to float one group at a time. Writes OpenVINO IR (`out`
    .xml and its .bin), the file OpenVINO runs.

    The validation function is NNCF's documented OpenVINO one (a compiled model in, top-1 accuracy), except
    that it also returns each image's 0/1 result: NNCF's API allows that, and without it NNCF calls the
    function once per image. On ONNX's backend (ONNX Runtime validating QDQ files it only partly fuses) one
    ranking pass of MobileNetV2 at 224 px took 397 s on 2 cores; on OpenVINO's it is many times faster.

    NNCF's default bounds the reverts only by the number of quantized layers; `max_num_iterations`
    (AdvancedAccuracyRestorerParameters) caps them.
    """
    import nncf
    import openvino

    def top1(compiled: Any, items: Iterable[tuple[np.ndarray, int]]) -> tuple[float, list[float]]:
        output = compiled.outputs[0]
        correct = [float(np.argmax(compiled(image[None])[output]) == label) for image, label in items]
        return float(np.mean(correct)), correct

    restorer = nncf.AdvancedAccuracyRestorerParameters()
    if max_num_iterations is not None:
        restorer.max_num_iterations = max_num_iterations
    calibration_set = nncf.Dataset(list(calibration), lambda image: image[None])
    validation = nncf.Dataset(list(zip(validation_images, validation_labels.tolist())), lambda item: item[0][None])
    quantized = nncf.quantize_with_accuracy_control(
        openvino.Core().read_model(str(float_onnx)), calibration_set, validation, top1,
        max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, advanced_accuracy_restorer_parameters=restorer)
    openvino.save_model(quantized, str(out))
    return out


def _nncf_dataset(float_onnx: Path, images: np.ndarray) -> Any:
    import nncf

    input_name = _onnx_input_name(float_onnx)
    return nncf.Dataset(list(images), lambda image: {input_name: image[None]})


def _onnx_input_name(path: Path) -> str:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    (name,) = [value.name for value in graph.input if value.name not in initializers]
    return name
