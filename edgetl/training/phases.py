"""One training phase (head, then fine-tune): Keras fit with validation after BatchNorm
recalibration, the best epoch's weights kept, and resume checkpoints (edgetl/artifacts/resume.py)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from edgetl.artifacts.resume import Checkpoint, CheckpointStore
from edgetl.artifacts.staging import DISK_FULL
from edgetl.errors import ResourceError
from edgetl.progress import epoch_logger, say
from edgetl.tf_env import keras
from edgetl.training import batchnorm, multitask


class BestWeights:
    """Keeps the weights of the epoch with the best validation accuracy (first best wins ties)."""

    def __init__(self) -> None:
        self.accuracy, self.epoch, self.weights = -1.0, 0, None

    def update(self, model: Any, accuracy: float, epoch: int) -> None:
        if accuracy > self.accuracy:
            self.accuracy, self.epoch, self.weights = accuracy, epoch, model.get_weights()


@dataclasses.dataclass(frozen=True)
class PhaseData:
    train: Any
    val: Any
    calibration: Any
    class_weight: dict[int, float] | None
    loss_weights: dict[str, float] | None = None  # multi-task: per output (edgetl/training/multitask.py)
    loss: str = "sparse_categorical_crossentropy"  # binary_crossentropy for the siamese head's pairs


class Progress:
    """Epochs done, history and best weights; saved as a checkpoint after an epoch (see `save`)."""

    # Checkpoints may cost at most this share of the training time: an epoch of a few seconds is
    # checkpointed every time, but a head epoch on cached features (~0.1 s) spent ~40 % of its time
    # writing one, so those are checkpointed every few epochs. A phase's last epoch is always saved.
    CHECKPOINT_SHARE = 0.1

    def __init__(self, store: CheckpointStore, total: int, throttle: bool = True) -> None:
        self.store, self.total, self.throttle = store, total, throttle
        self.done, self.history, self.best = 0, [], BestWeights()
        self.saved_at, self.save_seconds = time.monotonic(), 0.0

    def restore(self, checkpoint: Checkpoint) -> None:
        self.done, self.history = checkpoint.epoch, checkpoint.history
        self.best.accuracy, self.best.epoch = checkpoint.best_accuracy, checkpoint.best_epoch
        self.best.weights = checkpoint.best_weights

    def save(self, model: Any, optimizer: Any, epoch: int, phase: str, last_of_phase: bool = True) -> None:
        started = time.monotonic()
        since_last = started - self.saved_at
        if self.throttle and not last_of_phase and self.save_seconds > self.CHECKPOINT_SHARE * since_last:
            return
        optimizer = [v.numpy() for v in optimizer.variables]
        try:
            self.store.save(Checkpoint(epoch, phase, self.history, self.best.accuracy, self.best.epoch,
                                       model.get_weights(), self.best.weights, optimizer))
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise ResourceError(f"{self.store.directory}: no space left on device for the checkpoint of "
                                    f"epoch {epoch}; free some space and re-run") from None
            raise
        self.done = epoch
        self.saved_at = time.monotonic()
        self.save_seconds = self.saved_at - started

    def interrupted_message(self) -> str:
        if not self.done:
            return "interrupted before the first epoch completed; re-running the same command starts over"
        return (f"interrupted; re-run the same command to resume from epoch {self.done} of {self.total} "
                f"(checkpoint {self.store.directory})")


def fit_phase(model: Any, data: PhaseData, progress: Progress, phase: str, learning_rate: float, first_epoch: int,
              epochs: int, optimizer_state: list[Any] | None, optimizer_for: Any, trained: Any = None,
              warmup: bool = False) -> None:
    """Train one phase: epochs first_epoch+1 .. first_epoch+epochs, skipping those already done.

    `trained` is the model fit() runs on: `model` itself, or its head alone on cached features
    (it shares the head's layers, so `model` learns either way; checkpoints always hold `model`).
    """
    k = keras()
    trained = model if trained is None else trained
    # Cosine decay to zero: large steps early, and weights that settle at the end. With `warmup` the rate
    # first rises linearly over one epoch: Adam's first steps move every weight by about the full rate
    # whatever its gradient, which knocked a pretrained backbone's validation accuracy from 0.74 to 0.56
    # in the first fine-tuning epoch (digits, 10 images per class, 1e-4).
    steps = max(1, epochs * len(data.train))
    warmup_steps = len(data.train) if warmup and epochs > 1 else 0
    schedule = k.optimizers.schedules.CosineDecay(0.0 if warmup_steps else learning_rate, steps - warmup_steps,
                                                  warmup_target=learning_rate if warmup_steps else None,
                                                  warmup_steps=warmup_steps)
    trained.compile(optimizer=optimizer_for(schedule), loss=data.loss,
                    metrics=["accuracy"], loss_weights=data.loss_weights)
    if optimizer_state:  # resuming inside this phase: the step count (schedule) and Adam's moments
        trained.optimizer.build(trained.trainable_variables)
        for variable, value in zip(trained.optimizer.variables, optimizer_state, strict=True):
            variable.assign(value)
    shape = "one epoch of warmup, then cosine decay" if warmup_steps else "cosine decay"
    say(f"{phase}: {epochs} epoch(s), learning rate {learning_rate:g} with {shape}, "
        f"{sum(int(np.prod(w.shape)) for w in trained.trainable_weights):,} trainable parameters")

    class ValidateAndTrackBest(k.callbacks.Callback):
        """Validation runs here, after BatchNorm recalibration, rather than inside fit()."""

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            batchnorm.recalibrate(model, data.calibration)
            results = self.model.evaluate(data.val, verbose=0, return_dict=True)
            # Several outputs (multi-task): the mean of the tasks' accuracies, each task's in the logs too.
            val_loss, val_accuracy, per_task = multitask.validation(results, self.model.output_names, logs)
            if logs is not None:
                logs.update(val_loss=val_loss, val_accuracy=val_accuracy, **per_task)
            progress.best.update(model, float(val_accuracy), first_epoch + epoch + 1)

    class SaveCheckpoint(k.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            last = epoch + 1 == epochs
            progress.save(model, trained.optimizer, first_epoch + epoch + 1, phase, last_of_phase=last)

    trained.fit(data.train, epochs=epochs, initial_epoch=max(0, progress.done - first_epoch), verbose=0,
                class_weight=data.class_weight,
                callbacks=[ValidateAndTrackBest(), epoch_logger(phase, first_epoch, progress.total, progress.history),
                           SaveCheckpoint()])
