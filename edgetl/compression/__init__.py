"""Compression steps on a flat transfer model: pruning, clustering, quantization-aware training.

One module per technique, each with `apply(model, ...)` returning a model TFMOT has wrapped (train it
as usual) and `strip(model)` returning a plain Keras model again. Only layers a technique supports
are wrapped (a per-layer clone function), so custom layers such as HardSwish pass through untouched.

Stage 2, `edgetl compress`: recipes of these steps (`recipe`), their training (`finetune`), layer sensitivity
(`sensitivity`), and the search that exports and benches every candidate (`compressor`, `report`).

May import: the ground, edgetl.training (the run's options and distribution), edgetl.exporting and edgetl.runner.
"""

from typing import Any


def kernels(model: Any, kinds: tuple[str, ...]) -> list[Any]:
    """The kernels (numpy) of the `kinds` layers, looking inside TFMOT wrappers such as QAT's, whose
    inner layers keep their kernel variables but report no weights of their own."""
    found = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if type(inner).__name__ in kinds:
            kernel = getattr(inner, "depthwise_kernel", None)
            found.append((kernel if kernel is not None else inner.kernel).numpy())
    return found
