"""Compression steps on a flat transfer model: pruning, clustering, quantization-aware training.

One module per technique, each with `apply(model, ...)` returning a model TFMOT has wrapped (train it
as usual) and `strip(model)` returning a plain Keras model again. Only layers a technique supports
are wrapped (a per-layer clone function), so custom layers such as HardSwish pass through untouched.
The `edgetl compress` command (issue #6) builds recipes from these steps.
"""
