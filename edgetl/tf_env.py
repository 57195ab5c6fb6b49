"""The one place edgetl imports TensorFlow and Keras 2 (`tf_keras`).

TensorFlow 2.16+ ships Keras 3 as `tf.keras`, but tensorflow-model-optimization works only with
Keras 2, so every model is built with `tf_keras`. Importing happens on first use, never at import
time of edgetl, so `edgetl --help` stays fast.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType


@functools.cache
def tf() -> ModuleType:
    # Only quiet TensorFlow's C++ start-up chatter (CUDA probing) when the user has not chosen a level.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow

    return tensorflow


@functools.cache
def keras() -> ModuleType:
    tf()
    import tf_keras

    return tf_keras


def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of the libraries a manifest records (TensorFlow's, plus `extra` distributions)."""
    import platform
    from importlib import metadata

    from edgetl.version import __version__

    out = {"edgetl": __version__, "python": platform.python_version()}
    for dist in ("tensorflow", "tf-keras", "numpy", *extra):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out
