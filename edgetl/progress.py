"""Progress and log lines go to stderr, so `--json` output on stdout stays one clean document.

While the CLI captures TensorFlow's native output (edgetl.console), they go to the real terminal and
into the captured log as well, so the log reads in order."""

from __future__ import annotations

import sys
import time
from typing import Any

from edgetl.console import terminal
from edgetl.tf_env import keras


def say(message: str) -> None:
    shown = terminal()
    print(message, file=shown, flush=True)
    if shown is not sys.stderr:
        print(message, file=sys.stderr, flush=True)


def epoch_logger(phase: str, first_epoch: int, total_epochs: int, history: list[dict[str, Any]]) -> Any:
    """A Keras callback: one stderr line per epoch (and a live batch counter on a TTY); appends to history."""

    class EpochLogger(keras().callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.perf_counter()
            self.epoch_index = epoch

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if terminal().isatty():
                print(f"\r  {phase} epoch {first_epoch + self.epoch_index + 1}/{total_epochs} batch {batch + 1}",
                      end="", file=terminal(), flush=True)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = {k: round(float(v), 4) for k, v in (logs or {}).items()}
            record = {"epoch": first_epoch + epoch + 1, "phase": phase,
                      "seconds": round(time.perf_counter() - self.started, 2), **logs}
            history.append(record)
            if terminal().isatty():
                print("\r", end="", file=terminal())
            say(f"  {phase} epoch {record['epoch']}/{total_epochs}: loss {logs.get('loss', float('nan')):.4f} "
                f"acc {logs.get('accuracy', float('nan')):.4f} val_loss {logs.get('val_loss', float('nan')):.4f} "
                f"val_acc {logs.get('val_accuracy', float('nan')):.4f} ({record['seconds']:.1f}s)")

    return EpochLogger()
