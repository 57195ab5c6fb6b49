#!/usr/bin/env python3
"""Reference client of an edgetl bundle: the model in ONNX Runtime (Python).

    pip install onnxruntime numpy pillow
    python3 client_onnxruntime.py photo.jpg [more.png ...] [--top-k 3] [--threads 4]
    python3 client_onnxruntime.py --selftest

Standalone: copy the whole bundle folder; nothing here imports edgetl. Preprocessing (model.json) is
the one training used, including the input layout (NHWC, or NCHW for models exported with --nchw).
"""


class Runtime:
    name = "ONNX Runtime"

    def __init__(self, model_path, threads=None):
        import onnxruntime as ort

        self.name = f"ONNX Runtime {ort.__version__}"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name

    def run(self, tensor):
        return self.session.run([self.output], {self.input: tensor})[0]
