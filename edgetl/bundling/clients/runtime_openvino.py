#!/usr/bin/env python3
"""Reference client of an edgetl bundle: the model in OpenVINO's CPU plugin (Python), for x86 machines.

    pip install openvino numpy pillow
    python3 client_openvino.py photo.jpg [more.png ...] [--top-k 3] [--threads 4]
    python3 client_openvino.py --selftest

Standalone: copy the whole bundle folder; nothing here imports edgetl. The .onnx file is read as is and
compiled for one image at a time, for latency, in float32 precision (as edgetl measured it).
"""


class Runtime:
    name = "OpenVINO"
    key = "openvino"  # its own expected outputs in test_vectors/expected.json

    def __init__(self, model_path, threads=None):
        import openvino

        self.name = f"OpenVINO {openvino.__version__.split('-')[0]}"
        core = openvino.Core()
        model = core.read_model(str(model_path))
        shape = model.inputs[0].get_partial_shape()
        if shape[0].is_dynamic:  # one image at a time: a static shape compiles to faster code
            model.reshape({model.inputs[0]: [1, *(d.get_length() for d in list(shape)[1:])]})
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.request = core.compile_model(model, "CPU", config).create_infer_request()

    def run(self, tensor):
        self.request.infer({0: tensor})
        return self.request.get_output_tensor(0).data.copy()
