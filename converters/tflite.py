"""Keras -> TFLite with the TFLite converter: float32, float16 weights, dynamic-range or full int8.

The model is traced as a concrete function with a fixed batch of 1 (what edge apps feed) and an
input named "image". int8 is full-integer: only int8 kernels are allowed (TFLITE_BUILTINS_INT8), so
the converter fails rather than silently leaving float ops; weights are per-channel; activations are
calibrated on representative images from the run's training split, with ranges measured so that no
buffer reuse corrupts them (tflite_calibration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgetl.converters.base import ConversionInput, ExportOptions
from edgetl.converters.tflite_calibration import calibrated_model, quantize
from edgetl.errors import CheckFailedError
from edgetl.network.tasks import as_list, name_tflite_outputs, task_outputs
from edgetl.tf_env import tf


class KerasToTFLite:
    format = "tflite"
    suffix = ".tflite"
    reads_fake_quant = True

    def check(self, options: ExportOptions) -> list[str]:
        return []

    def convert(self, source: ConversionInput, options: ExportOptions, out: Path) -> dict[str, Any]:
        from edgetl.backbones.layers import for_int8_conversion

        t = tf()
        # int8: hard-swish as int8 MUL/ADD (XNNPACK has no int8 HARD_SWISH kernel; see backbones/layers.py).
        model = for_int8_conversion(source.model) if options.quantize == "int8" else source.model
        spec = t.TensorSpec([1, source.image_size, source.image_size, 3], t.float32, name="image")
        tasks = task_outputs(source.model)  # a multi-task model: outputs in task order, named below
        function = t.function(lambda image: {"probability": model(image, training=False)} if not tasks else
                              as_list(model(image, training=False)), input_signature=[spec], autograph=False)
        # No trackable object: with one, TensorFlow first exports a SavedModel (~10x slower, same ops);
        # the closure keeps `model` and its variables alive for the conversion.
        concrete = function.get_concrete_function()
        converter = t.lite.TFLiteConverter.from_concrete_functions([concrete])
        if options.quantize != "none":
            converter.optimizations = [t.lite.Optimize.DEFAULT]
        if options.quantize == "fp16":
            converter.target_spec.supported_types = [t.float16]
        elif options.quantize == "int8":
            converter.representative_dataset = lambda: _representative(source.calibration)
            converter.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_type = {"float32": t.float32, "int8": t.int8, "uint8": t.uint8}[options.io_dtype]
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
            converter._experimental_disable_per_channel = not options.per_channel  # no public switch
        facts: dict[str, Any] = {"converter": "tf.lite.TFLiteConverter", "batch": 1}
        try:
            # Post-training int8: the converter's calibration misreads some ranges (tflite_calibration). A QAT
            # model's ranges are its fake-quant ranges: the converter quantizes it as it is.
            post_training = options.quantize == "int8" and not _fake_quantized(model)
            if post_training:
                calibrated = calibrated_model(converter, source.calibration)
                flatbuffer = quantize(calibrated, options.per_channel, options.io_dtype)
            else:
                flatbuffer = converter.convert()
            if options.float_fallback:
                if not post_training:
                    calibrated = calibrated_model(converter, source.calibration, remeasure=False)
                flatbuffer, facts["float_nodes"] = _with_float_fallback(calibrated, flatbuffer, options)
        except Exception as exc:  # the converter raises ConverterError and plain Exceptions alike
            raise CheckFailedError(f"TFLite conversion ({options.quantize}) failed: {str(exc).splitlines()[0]}") from exc
        if tasks:
            flatbuffer = name_tflite_outputs(flatbuffer, tasks)
        out.write_bytes(flatbuffer)
        if options.quantize == "int8":
            facts["calibration_images"] = int(len(source.calibration))
            facts["weights"] = "int8 per-channel" if options.per_channel else "int8 per-tensor"
        return facts


def _representative(images: np.ndarray) -> Iterator[list[np.ndarray]]:
    for image in images:
        yield [image[None].astype(np.float32)]


def _fake_quantized(model: Any) -> bool:
    """A TFMOT quantization-aware-trained model (quantize_apply's QuantizeLayer/QuantizeWrapper layers)."""
    return any(type(layer).__name__.startswith("Quantize") for layer in model.layers)


def _with_float_fallback(calibrated: bytes, full_int8: bytes, options: ExportOptions) -> tuple[bytes, list[str]]:
    """Selective quantization: the ops of `options.float_fallback` (layer names) stay float (the MLIR
    quantizer's denylist); QUANTIZE/DEQUANTIZE ops go in at the borders, so the model is no longer full-integer."""
    from ai_edge_litert.interpreter import Interpreter

    layers = options.float_fallback
    names = [d["name"] for d in Interpreter(model_content=full_int8).get_tensor_details()]
    nodes = sorted({n for n in names for layer in layers if f"/{layer}/" in n})
    if not nodes:
        raise CheckFailedError(f"float fallback: no TFLite op belongs to the layers {', '.join(layers)}")
    return quantize(calibrated, options.per_channel, float_nodes=tuple(nodes)), nodes
