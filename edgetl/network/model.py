"""The transfer model: a backbone with a classification head attached *flat* to its layers.

No nested Model: TFMOT can only wrap layers of a flat functional model, so the head is built on
`backbone.output` and the result is one Model whose layers are the backbone's plus the head's.
Head layers are named with HEAD_PREFIX so later stages can tell them apart.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from edgetl.backbones.spec import BackboneSpec
from edgetl.errors import InputError, UsageError, WeightsUnavailableError
from edgetl.network.heads import HEAD_PREFIX
from edgetl.tf_env import keras

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.txt"


def build_classifier(spec: BackboneSpec, image_size: int, alpha: float, num_classes: int, *,
                     imagenet: bool, dropout: float, head: str = "linear",
                     tasks: list[tuple[str, int]] | None = None) -> Any:
    """`tasks` [(task, number of classes)]: a multi-task model, one head and named output per task."""
    from edgetl.network.heads import HEADS

    base = _build_backbone(spec, image_size, alpha, imagenet)
    if tasks:
        from edgetl.network.tasks import task_model

        return task_model(base, tasks, head, dropout, name=f"edgetl_{spec.name}")
    probs = HEADS[head](base.output, num_classes, dropout)
    return keras().Model(base.input, probs, name=f"edgetl_{spec.name}")


def _build_backbone(spec: BackboneSpec, image_size: int, alpha: float, imagenet: bool) -> Any:
    try:
        return spec.build(image_size, alpha, "imagenet" if imagenet else None)
    except ValueError as exc:
        raise UsageError(f"--backbone {spec.name}: {exc}") from exc
    except Exception as exc:
        # tf_keras' get_file raises a bare Exception("URL fetch failure on URL: ...") when offline.
        match = re.search(r"URL fetch failure on (\S+): ", str(exc))
        if not match:
            raise
        url = match.group(1)
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / url.rsplit("/", 1)[-1]
        from edgetl.backbones.lite_imagenet import offline_backbones

        offline = ", ".join(offline_backbones()) or "none installed"
        raise WeightsUnavailableError(
            f"--weights imagenet: cannot download {spec.name} ImageNet weights ({url}); offline? "
            f"Backbones with ImageNet weights on this machine: {offline} (--backbone). Or put that file at "
            f"{cache}, or use --weights none, --weights FILE.h5, or --weights RUN_DIR (a previous edgetl run)"
        ) from None


def backbone_layers(model: Any) -> list[Any]:
    """Layers that carry backbone weights (everything but the input and the head). Output layers are head
    layers too: a multi-task model's are named after their tasks (edgetl/training/multitask.py)."""
    has_head = any(layer.name.startswith(HEAD_PREFIX) for layer in model.layers)
    outputs = set(model.output_names) if has_head else set()  # a bare network (a weights file) is all backbone
    return [layer for layer in model.layers if not layer.name.startswith(HEAD_PREFIX) and layer.name not in outputs
            and not isinstance(layer, keras().layers.InputLayer)]


def copy_matching_weights(source: Any, target_layers: list[Any]) -> int:
    """Copy weights layer by layer where names and shapes match; return how many layers were copied."""
    by_name = {layer.name: layer for layer in source.layers}
    copied = 0
    for layer in target_layers:
        src = by_name.get(layer.name)
        if src is None or not layer.weights:
            continue
        src_weights = src.get_weights()
        if [w.shape for w in src_weights] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(src_weights)
            copied += 1
    return copied


def load_weights_file(model: Any, path: Path, trust: bool = False) -> int:
    """Load a Keras weights/model file into the backbone by layer name; return layers loaded."""
    layers = backbone_layers(model)
    if path.suffix == ".keras":
        return copy_matching_weights(load_model(path, trust), layers)
    if not path.name.endswith((".h5", ".hdf5")):
        raise InputError(f"--weights {path}: expected a .h5/.keras file, 'imagenet', 'none' or a run directory")
    try:
        matching = _h5_matching_layers(path, layers)
        model.load_weights(str(path), by_name=True, skip_mismatch=True)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"--weights {path}: cannot read weights ({exc})") from exc
    return matching


def _h5_matching_layers(path: Path, layers: list[Any]) -> int:
    """How many of `layers` the HDF5 weights file holds under the same name with the same shapes."""
    import h5py

    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        names = {n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("layer_names", [])}
        count = 0
        for layer in layers:
            if layer.name not in names or not layer.weights:
                continue
            saved = group[layer.name]
            weight_names = [n.decode() if isinstance(n, bytes) else n for n in saved.attrs.get("weight_names", [])]
            if [saved[n].shape for n in weight_names] == [tuple(w.shape) for w in layer.weights]:
                count += 1
        return count


def predict_in_batches(model: Any, images: Any, batch_size: int = 64) -> Any:
    """Eager calls in fixed-size chunks: unlike model.predict, no retracing for each new input count.
    A model with several outputs (multi-task) gives a list: one array per output."""
    import numpy as np

    chunks = [model(images[i:i + batch_size], training=False) for i in range(0, len(images), batch_size)]
    if chunks and isinstance(chunks[0], (list, tuple)):
        return [np.concatenate([chunk[j].numpy() for chunk in chunks]) for j in range(len(chunks[0]))]
    return np.concatenate([chunk.numpy() for chunk in chunks])


def load_model(path: Path, trust: bool = False) -> Any:
    """Load a .keras model with safe_mode (no arbitrary code from Lambda layers) unless `trust`."""
    import edgetl.backbones.layers  # noqa: F401  (registers HardSwish/HardSigmoid for deserialization)

    try:
        return keras().models.load_model(str(path), compile=False, safe_mode=not trust)
    except (OSError, ValueError, TypeError) as exc:
        if "safe_mode" in str(exc):  # tf_keras' refusal of a Lambda layer's Python code
            raise InputError(f"{path}: the model contains Python code (a Lambda layer) that would run when it "
                             f"is loaded; refused. Pass --trust-model only if you trust the file's source") from None
        raise InputError(f"{path}: cannot load Keras model ({str(exc).splitlines()[0]})") from exc
