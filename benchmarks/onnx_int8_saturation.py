"""ONNX int8 weights on 8 bits (ONNX Runtime's quantizer as edgetl called it before) and on 7 bits (edgetl now).

    python benchmarks/onnx_int8_saturation.py [--run edgetl-demo/run]

x86 CPUs without VNNI (AVX2; AVX-512 without VNNI) run uint8 x int8 products with vpmaddubsw, which adds
each pair of products in int16 and saturates: 2 * 255 * 127 does not fit, 2 * 255 * 64 does. Both files come
from the same float ONNX model and the same 200 calibration images (per-channel weights, uint8 activations,
static QDQ); only the weight range differs. Each is scored on the run's validation images three ways: in ONNX
Runtime as shipped (integer kernels), in ONNX Runtime with graph optimizations off (every QDQ pair simulated in
float: the file's own accuracy, no integer kernel involved) and in OpenVINO. Where the integer rows fall
below the simulated one, the kernels saturate. Prints the machine's ISA flags; ~2 min for the demo run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from edgetl.artifacts.run_dir import Run, load_images
    from edgetl.converters import get_converter, onnx_quantize
    from edgetl.converters.base import ConversionInput, ExportOptions
    from edgetl.network.model import MODEL_FILE, load_model
    from edgetl.runner.machine import machine_info
    from edgetl.targets.openvino import OpenVINOSession
    from edgetl.targets.ort import OnnxRuntimeSession

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("edgetl-demo/run"))
    args = parser.parse_args(argv)
    run = Run.open(args.run)
    model = load_model(run.path / MODEL_FILE)
    paths, _ = run.sample("train", 200, 0)
    calibration = load_images(paths, run.image_size, run.preprocessing)
    val_paths, val_labels = run.sample("val", 100_000, 0)
    images, labels = load_images(val_paths, run.image_size, run.preprocessing), np.asarray(val_labels)
    keras_accuracy = float(np.mean(np.argmax(model.predict(images, verbose=0), 1) == labels))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration[i:i + 1] for i in range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    def accuracy(session: object) -> float:
        predicted = np.concatenate([session.predict(images[i:i + 32]) for i in range(0, len(images), 32)])
        return round(float(np.mean(np.argmax(predicted, 1) == labels)), 4)

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        float_path = folder / "float.onnx"
        files = {"8-bit weights": folder / "w8.onnx", "7-bit weights": folder / "w7.onnx"}
        get_converter("onnx").convert(ConversionInput(model, run.image_size, run.labels, None),
                                      ExportOptions(format="onnx", quantize="none"), float_path)
        quantize_static(str(float_path), str(files["8-bit weights"]), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        onnx_quantize.quantize(float_path, files["7-bit weights"], "int8", calibration)
        rows = {name: {"onnxruntime": accuracy(OnnxRuntimeSession(path)),
                       "onnxruntime, QDQ simulated in float": accuracy(OnnxRuntimeSession(path,
                                                                                          optimization="disable")),
                       "openvino": accuracy(OpenVINOSession(path))} for name, path in files.items()}
    machine = machine_info()
    print(json.dumps({"run": str(args.run), "images": int(len(labels)), "keras_accuracy": round(keras_accuracy, 4),
                      "cpu": machine["cpu"], "isa_flags": machine["isa_flags"], "accuracy": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
