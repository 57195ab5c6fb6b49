"""The Keras reference: the float model a run saved, run by tf_keras on the same prepared input."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgetl.targets.base import TensorInfo


class KerasSession:
    runtime = "keras"

    def __init__(self, path: Path) -> None:
        from edgetl.network.model import load_model
        from edgetl.network.tasks import task_outputs

        self.model = load_model(path)
        self.inputs = [TensorInfo("image", tuple(self.model.input_shape), "float32")]
        self.outputs = [TensorInfo("probability", tuple(self.model.output_shape), "float32")]
        tasks = task_outputs(self.model)  # a multi-task model: one output per task, named after it
        if tasks:
            self.outputs = [TensorInfo(name, tuple(output.shape), "float32")
                            for name, output in zip(tasks, self.model.outputs)]

    def prepare(self, images: np.ndarray) -> Callable[[], None]:
        return lambda: self.model(images, training=False)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.predict_all(images)[0]

    def predict_all(self, images: np.ndarray) -> list[np.ndarray]:
        from edgetl.network.model import predict_in_batches

        outputs = predict_in_batches(self.model, images)
        return outputs if isinstance(outputs, list) else [outputs]
