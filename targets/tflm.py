"""TensorFlow Lite Micro (TFLM), the microcontroller runtime, run on this host through its own Python
interpreter (PyPI `tflite-micro`, built from the tflite-micro repository).

It has the same kernels (TFLM's portable reference kernels, not the CMSIS-NN/ESP-NN ones a board links)
and the same arena planner as the firmware, so its answers, the ops it lacks and the arena it needs are
the device's; its latency is this host's, never the device's.

TFLM reports problems by printing them from C++ (MicroPrintf) and raising a bare "failed to allocate
tensors", and some of its failure paths crash the process (an arena far too small for the model can
segfault). So every question that may fail, whether it loads and whether an arena is large enough, is
asked in a fresh process (`_probe`, ~0.2 s) that prints what TFLM said: a missing kernel is named
("Didn't find op for builtin opcode 'TOPK_V2'"), and a crash is an answer too. The arena is one fixed
block given at construction; `smallest_arena` bisects for the smallest that allocates, which is the
figure a firmware's `tensor_arena[]` needs (TFLM's own alignment included).
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgetl.errors import InputError
from edgetl.targets.base import TensorInfo, dequantize, quantize

ARENA_STEP = 16  # bytes: TFLM aligns arena allocations to 16
GENEROUS_ARENA = 256 << 20  # loads anything a microcontroller could run; reserved, barely touched
MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_PROBE = ("import sys; from tflite_micro.python.tflite_micro import runtime; "
          "runtime.Interpreter.from_bytes(open(sys.argv[1], 'rb').read(), arena_size=int(sys.argv[2]))")


def unavailable_reason() -> str | None:
    """Why TFLM cannot run here (None: it can)."""
    try:
        _runtime()
    except ImportError as exc:
        return (f"tflite-micro is not installed ({exc}); pip install 'tflite-micro>=0.dev0' "
                "(Linux x86_64 wheels only)")
    return None


@functools.cache
def _runtime() -> Any:
    from tflite_micro.python.tflite_micro import runtime

    return runtime


def _probe(path: Path, arena_size: int) -> tuple[bool, list[str]]:
    """Does the model allocate in `arena_size` bytes? And what TFLM printed. In a fresh process (see above)."""
    done = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(arena_size)], capture_output=True,
                          text=True, timeout=300)
    printed = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if done.returncode < 0:
        printed.append(f"crashed (signal {-done.returncode})")
    return done.returncode == 0, printed


def load_problem(path: Path) -> str | None:
    """Why TFLM cannot load the file even with a generous arena (a missing kernel, a bad model), or None."""
    loads, printed = _probe(path, GENEROUS_ARENA)
    if loads:
        return None
    missing = sorted({m.group(1) for line in printed for m in [MISSING_OP.search(line)] if m})
    if missing:
        return f"TFLM has no kernel for {', '.join(missing)}"
    said = [line for line in printed if not line.startswith(("Traceback", "  "))]
    return "TFLM cannot load it: " + "; ".join(said)[-300:]


def _aligned(size: int) -> int:
    return max(ARENA_STEP, size // ARENA_STEP * ARENA_STEP)


def smallest_arena(path: Path, estimate: int | None = None) -> int:
    """The smallest tensor arena (bytes, a multiple of ARENA_STEP) in which TFLM allocates the model. The
    search starts at `estimate` (the graph's liveness estimate, a near lower bound) when given."""
    fits = _aligned(estimate or 64 * 1024)
    if _probe(path, fits)[0]:
        while fits > ARENA_STEP and _probe(path, _aligned(fits // 2))[0]:
            fits = _aligned(fits // 2)
        misses = _aligned(fits // 2) if fits > ARENA_STEP else 0
    else:
        misses = fits
        while not _probe(path, misses * 2)[0]:
            if misses * 2 >= GENEROUS_ARENA:
                raise InputError(f"{path}: TFLM cannot allocate it even in {GENEROUS_ARENA:,} bytes "
                                 f"({load_problem(path) or 'no reason printed'})")
            misses *= 2
        fits = misses * 2
    while fits - misses > ARENA_STEP:
        middle = _aligned((misses + fits) // 2)
        if _probe(path, middle)[0]:
            fits = middle
        else:
            misses = middle
    return fits


def facts(path: Path, estimate: int | None = None) -> dict[str, Any]:
    """What a microcontroller target needs to know about a file, from TFLM itself: why it cannot load
    (None: it loads) and the smallest arena it allocates in (None when it cannot load)."""
    stat = Path(path).stat()
    return dict(_facts(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, estimate))


@functools.lru_cache(maxsize=64)
def _facts(path: str, mtime_ns: int, size: int, estimate: int | None) -> tuple[tuple[str, Any], ...]:
    problem = load_problem(Path(path))
    arena = None if problem else smallest_arena(Path(path), estimate)
    return (("load_problem", problem), ("arena_bytes", arena), ("measured_by", "tflite-micro on this host"))


def _info(detail: dict[str, Any], name: str) -> TensorInfo:
    parameters = detail.get("quantization_parameters") or {}
    scales, zero_points = list(parameters.get("scales", [])), list(parameters.get("zero_points", []))
    return TensorInfo(name=name, shape=tuple(int(d) for d in detail["shape"]), dtype=np.dtype(detail["dtype"]).name,
                      scale=float(scales[0]) if len(scales) == 1 else 0.0,
                      zero_point=int(zero_points[0]) if len(zero_points) == 1 else 0)


class TFLMSession:
    """A .tflite file in TFLM on this host: one image per inference, as on the device."""

    runtime = "tflm"

    def __init__(self, path: Path, arena_size: int | None = None, num_threads: int | None = None,
                 **_: Any) -> None:
        reason = unavailable_reason()
        if reason:
            raise InputError(f"{path}: {reason}")
        problem = load_problem(path)  # in a fresh process: TFLM's failure paths can crash this one
        if problem:
            raise InputError(f"{path}: {problem}")
        self.arena_size = arena_size or GENEROUS_ARENA
        self.interpreter = _runtime().Interpreter.from_bytes(Path(path).read_bytes(), arena_size=self.arena_size)
        self.inputs = [_info(self.interpreter.get_input_details(0), "input")]
        self.outputs = [_info(self.interpreter.get_output_details(0), "output")]

    def prepare(self, images: np.ndarray) -> Callable[[], None]:
        self.interpreter.set_input(quantize(images[:1], self.inputs[0]), 0)
        return self.interpreter.invoke

    def predict(self, images: np.ndarray) -> np.ndarray:
        rows = []
        for image in images:
            self.interpreter.set_input(quantize(image[None], self.inputs[0]), 0)
            self.interpreter.invoke()
            rows.append(dequantize(self.interpreter.get_output(0), self.outputs[0]))
        return np.concatenate(rows) if rows else np.zeros((0, self.outputs[0].shape[-1]), np.float32)

    def predict_all(self, images: np.ndarray) -> list[np.ndarray]:
        return [self.predict(images)]
