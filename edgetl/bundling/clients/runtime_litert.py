#!/usr/bin/env python3
"""Reference client of an edgetl bundle: the model in LiteRT (ai-edge-litert), e.g. on a Raspberry Pi.

    pip install ai-edge-litert numpy pillow
    python3 client_litert.py photo.jpg [more.png ...] [--top-k 3] [--threads 4]
    python3 client_litert.py --selftest

Standalone: copy the whole bundle folder; nothing here imports edgetl. Preprocessing (model.json) is
the one training used; int8 inputs and outputs are quantized and dequantized with model.json's scale
and zero point, so the probabilities printed are always floats in [0, 1].
"""


class Runtime:
    name = "LiteRT"

    def __init__(self, model_path, threads=None):
        from ai_edge_litert import __version__ as version
        from ai_edge_litert.interpreter import Interpreter

        self.name = f"LiteRT {version}"
        self.interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def run(self, tensor):
        if tensor.dtype != self.input["dtype"]:
            takes = self.input["dtype"].__name__
            raise ClientError(f"model.json says the input is {tensor.dtype}, the model takes {takes}")  # noqa: F821
        self.interpreter.set_tensor(self.input["index"], tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()
