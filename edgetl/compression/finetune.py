"""Run a recipe's training steps (prune, cluster, qat) on a training run's model.

Each step wraps the model (TFMOT), fine-tunes it on the run's own training split with the run's
augmentation at a reduced learning rate with cosine decay, and strips the wrappers. BatchNorm layers
stay in inference mode: their statistics are the trained model's, and QAT folds them. Steps compose
the collaborative way: clustering after pruning preserves the zeros, and QAT after either uses the
preserving scheme (PQAT / CQAT).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from edgetl.artifacts.run_dir import Run
from edgetl.compression import cluster, prune, qat
from edgetl.compression.recipe import Recipe, Step, block_shape
from edgetl.data.pipeline import make_dataset
from edgetl.network.model import MODEL_FILE, load_model
from edgetl.progress import say
from edgetl.tf_env import keras
from edgetl.training.distribute import SINGLE_PROCESS, Distribution


@dataclasses.dataclass
class Trained:
    """What a recipe's training steps made (fresh copies; the run is untouched).

    `model` converts to TFLite as it is (after QAT: with its fake-quant ranges). `qat`: after a QAT step, the
    QAT model and the float model it wrapped, from which float_model() builds its plain float form."""
    model: Any
    facts: dict[str, Any]
    qat: tuple[Any, Any] | None = None
    _float: Any = None

    def float_model(self) -> Any:
        """The network in plain float layers with the trained weights, for converters that quantize by
        themselves (ONNX Runtime); built on first use, as only they ask. May raise CheckFailedError."""
        if self.qat is None:
            return self.model
        if self._float is None:
            self._float = qat.float_copy(*self.qat)
        return self._float


def apply_training_steps(run: Run, recipe: Recipe, dist: Distribution = SINGLE_PROCESS, *,
                         _in_scope: bool = False) -> Trained:
    """The compressed Keras models and facts for the manifest.

    With a strategy (`edgetl compress --distribute`), loading, wrapping and fine-tuning happen in its
    scope, and the result is copied into plain models outside it: conversion and verification then
    read ordinary variables, with no collective operation between workers."""
    if dist.strategy is not None and not _in_scope:
        with dist.scope():
            trained = apply_training_steps(run, recipe, dist, _in_scope=True)
        trained.facts["distribute"] = dist.section(int(run.manifest.options.get("batch_size", 32)))
        model = _plain_copy(trained.model)
        return Trained(model, trained.facts, (model, _plain_copy(trained.qat[1])) if trained.qat else None)
    started = time.perf_counter()
    k = keras()
    options = run.manifest.options
    k.utils.set_random_seed(int(options.get("seed", 0)))
    model = load_model(run.path / MODEL_FILE)
    for layer in model.layers:  # frozen: measured on the demo model, trainable BatchNorm recovered less
        if isinstance(layer, k.layers.BatchNormalization):
            layer.trainable = False
    train_index, val_index = run.splits
    train_ds, val_ds = _dataset(run, train_index, True, dist), _dataset(run, val_index, False, dist)
    facts: dict[str, Any] = {"steps": []}
    done: list[str] = []
    qat_models = None
    for step in recipe.training_steps:
        rate = step.get("learning_rate") or default_learning_rate(options, step.name)
        calibration = _calibration_images(run) if step.name == "qat" else None
        before = model
        model, step_facts = _run_step(model, step, rate, done, train_ds, len(train_ds), calibration)
        if step.name == "qat":
            qat_models = (model, before)
        done.append(step.name)
        facts["steps"].append(step_facts)
    facts["keras_val_accuracy"] = _accuracy(model, val_ds)
    facts["kernel_sparsity"] = round(prune.kernel_sparsity(model), 4)
    facts["max_unique_kernel_values"] = cluster.max_unique_values(model)
    facts["seconds"] = round(time.perf_counter() - started, 1)
    say(f"  {recipe.spec()}: Keras validation accuracy {facts['keras_val_accuracy']:.4f} "
        f"(sparsity {facts['kernel_sparsity']:.2f}, {facts['seconds']:.0f} s)")
    return Trained(model, facts, qat_models)


def _dataset(run: Run, index: Any, training: bool, dist: Distribution) -> Any:
    """The run's own input pipeline: its batch size (the global batch), seed and augmentation."""
    options = run.manifest.options
    return dist.shard(make_dataset(index.paths, index.labels, image_size=run.image_size,
                                   batch_size=int(options.get("batch_size", 32)), preprocessing=run.preprocessing,
                                   training=training, seed=int(options.get("seed", 0)),
                                   augment=bool(options.get("augment", True)), flip=bool(options.get("flip", True))))


def _calibration_images(run: Run) -> np.ndarray:
    """QAT's starting ranges: the training images int8 export calibrates on (its default count and seed)."""
    from edgetl.artifacts.run_dir import load_images
    from edgetl.converters.base import ExportOptions

    defaults = ExportOptions(format="tflite", quantize="int8")
    paths, _ = run.sample("train", defaults.calibration_size, defaults.seed)
    return load_images(paths, run.image_size, run.preprocessing)


def _plain_copy(model: Any) -> Any:
    """The same model and weights in ordinary variables. Reading the weights is collective under
    MultiWorkerMirroredStrategy (BatchNorm statistics are all-reduced), so every worker calls this."""
    from edgetl.backbones.layers import quantize_scope

    weights = model.get_weights()
    with quantize_scope():
        copy = keras().models.clone_model(model)
    copy.set_weights(weights)
    return copy


# Default learning rates, as a fraction of the peak rate of the run's last training phase. Measured
# on the demo model (peak 3e-3): pruning needs room to recover (50 % sparsity: 7.2 points lost after
# 4 epochs at 1e-4, 0.3 after 8 at 1e-3); clustering and QAT only adjust (at 1e-3 they lost 2.0 and
# 0.8 points, at 1e-4 they gained 0.3 and 0.6).
LEARNING_RATE_FRACTION = {"prune": 1 / 3, "cluster": 1 / 30, "qat": 1 / 30}


def default_learning_rate(run_options: dict[str, Any], step: str) -> float:
    from edgetl.training.config import FINE_TUNE_LEARNING_RATE, SCRATCH_LEARNING_RATE

    # The rate of the last phase that trained backbone layers: a head-only run's rate suits a linear layer.
    if run_options.get("fine_tune_epochs") or run_options.get("weights", "none") != "none":
        peak = float(run_options.get("fine_tune_learning_rate") or FINE_TUNE_LEARNING_RATE)
    else:
        peak = float(run_options.get("learning_rate") or SCRATCH_LEARNING_RATE)
    return peak * LEARNING_RATE_FRACTION[step]


def _run_step(model: Any, step: Step, rate: float, done: list[str], train_ds: Any,
              steps_per_epoch: int, calibration: np.ndarray | None = None) -> tuple[Any, dict[str, Any]]:
    epochs = step.get("epochs")
    callbacks: list[Any] = []
    if step.name == "prune":
        # Reach the final sparsity two thirds of the way through, then let the weights recover.
        end = max(1, (2 * epochs * steps_per_epoch) // 3)
        wrapped = prune.apply(model, step.get("sparsity"), 0, end, step.get("structure"), block_shape(step))
        callbacks = prune.callbacks()
        detail = {"end_step": end}
    elif step.name == "cluster":
        from edgetl.compression.fold import fold_batchnorm

        model, folded = fold_batchnorm(model)  # so the shared values survive conversion (see fold.py)
        preserve = step.get("preserve_sparsity") or "prune" in done
        wrapped = cluster.apply(model, step.get("clusters"), preserve_sparsity=preserve)
        detail = {"preserve_sparsity": preserve, "batchnorm_folded": folded}
    else:
        preserve = "+".join(name for name in ("prune", "cluster") if name in done) or "none"
        wrapped = qat.apply(model, preserve, calibration)
        detail = {"preserve": preserve, "calibration_images": 0 if calibration is None else len(calibration)}
    say(f"  {step.name}: fine-tuning {epochs} epoch(s) at learning rate {rate:g}")
    schedule = keras().optimizers.schedules.CosineDecay(rate, decay_steps=max(1, epochs * steps_per_epoch))
    wrapped.compile(optimizer=keras().optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
    history = wrapped.fit(train_ds, epochs=epochs, verbose=0, callbacks=callbacks)
    stripped = {"prune": prune, "cluster": cluster, "qat": qat}[step.name].strip(wrapped)
    losses = [round(float(v), 4) for v in history.history["loss"]]
    return stripped, {"name": step.name, "epochs": epochs, "learning_rate": rate, "loss": losses, **detail}


def _accuracy(model: Any, val_ds: Any) -> float:
    correct = total = 0
    for images, labels in val_ds:
        predicted = np.argmax(model(images, training=False).numpy(), axis=1)
        correct += int(np.sum(predicted == labels.numpy()))
        total += int(len(predicted))
    return round(correct / max(total, 1), 4)
