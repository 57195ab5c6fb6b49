"""Training checkpoints, so an interrupted `edgetl train` resumes from its last completed epoch.

After an epoch (edgetl/training/phases.py says which) the state goes to a hidden folder beside the output, `.NAME.resume/`: one `.npz`
with the model's weights, the best epoch's weights and the optimizer's variables, then `state.json`
(epoch, phase, history, best epoch and accuracy, and the identity of the training) written last and
atomically, so it always names a complete `.npz`. The identity is everything that decides the
result: the options, the source weights, and which images (paths, labels, sizes and modification
times) are in each split. A checkpoint whose identity differs is never resumed: it is removed and
training starts over, saying which part changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.artifacts.manifest import write_bytes_atomic, write_file_atomic
from edgetl.progress import say

STATE_FILE = "state.json"
FORMAT = 1


def resume_dir(output: Path) -> Path:
    output = Path(output).resolve()
    return output.parent / f".{output.name}.resume"


def data_stamp(paths: list[str]) -> str:
    """sha256 over (path, size, mtime) of every image: a replaced or edited image changes it."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        try:
            st = os.stat(path)
            facts = f"{st.st_size} {st.st_mtime_ns}"
        except OSError:
            facts = "missing"
        digest.update(os.fsencode(path) + b"\0" + facts.encode() + b"\n")
    return digest.hexdigest()


@dataclasses.dataclass
class Checkpoint:
    epoch: int  # epochs completed, over both phases
    phase: str  # phase of that epoch: "head" or "fine-tune"
    history: list[dict[str, Any]]
    best_accuracy: float
    best_epoch: int
    weights: list[np.ndarray]
    best_weights: list[np.ndarray]
    optimizer: list[np.ndarray]  # the phase's optimizer variables (iterations, Adam moments)


class CheckpointStore:
    def __init__(self, directory: Path, identity: dict[str, Any]) -> None:
        self.directory = directory
        self.identity = json.loads(json.dumps(identity))  # as it reads back from state.json
        self.key = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()

    def load(self) -> Checkpoint | None:
        """The checkpoint of this exact training, or None (a stale or broken one is removed, saying why)."""
        state_path = self.directory / STATE_FILE
        if not state_path.exists():
            return None
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            if state.get("key") != self.key:
                changed = _what_changed(state.get("identity"), self.identity)
                self._discard(f"it belongs to a different training ({changed})")
                return None
            with np.load(self.directory / state["arrays"]) as arrays:
                groups = {prefix: [arrays[f"{prefix}{i}"] for i in range(state["counts"][prefix])]
                          for prefix in ("w", "b", "o")}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._discard(f"it is unreadable ({exc})")
            return None
        return Checkpoint(epoch=state["epoch"], phase=state["phase"], history=state["history"],
                          best_accuracy=state["best_accuracy"], best_epoch=state["best_epoch"],
                          weights=groups["w"], best_weights=groups["b"] or groups["w"], optimizer=groups["o"])

    def save(self, checkpoint: Checkpoint) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{checkpoint.epoch}.npz"
        # The best weights are stored only when they are not the current ones.
        best = [] if checkpoint.best_epoch == checkpoint.epoch else checkpoint.best_weights
        arrays = {f"{prefix}{i}": a for prefix, group in (("w", checkpoint.weights), ("b", best),
                                                          ("o", checkpoint.optimizer)) for i, a in enumerate(group)}
        write_file_atomic(self.directory / name, lambda fh: np.savez(fh, **arrays))
        state = {"format": FORMAT, "key": self.key, "identity": self.identity, "arrays": name,
                 "counts": {"w": len(checkpoint.weights), "b": len(best), "o": len(checkpoint.optimizer)},
                 "epoch": checkpoint.epoch, "phase": checkpoint.phase, "history": checkpoint.history,
                 "best_accuracy": checkpoint.best_accuracy, "best_epoch": checkpoint.best_epoch}
        write_bytes_atomic(self.directory / STATE_FILE, json.dumps(state, indent=1).encode())
        for old in self.directory.glob("epoch-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def _discard(self, why: str) -> None:
        say(f"not resuming from {self.directory}: {why}; starting over")
        self.clear()


def _what_changed(old: Any, new: dict[str, Any]) -> str:
    if not isinstance(old, dict):
        return "unknown origin"
    changed = []
    options = [k for k in sorted(set(old.get("options", {})) | set(new["options"]))
               if old.get("options", {}).get(k) != new["options"].get(k)]
    if options:
        changed.append("options changed: " + ", ".join(f"--{k.replace('_', '-')}" for k in options))
    if any(old.get(k) != new[k] for k in ("train_fingerprint", "val_fingerprint", "data_stamp")):
        changed.append("the images changed")
    if old.get("source") != new["source"]:
        changed.append("the --weights source changed")
    return "; ".join(changed) or "a different edgetl version"
