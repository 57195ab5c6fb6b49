"""Measurements in fresh processes (edgetl.runner.bench_worker): one file's latency, so its peak RSS is its
own and no other model's caches or threads are around; and the recommendation's shortlist, timed side by side.
`options` is a `bench.BenchOptions`."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.artifacts.run_dir import load_images
from edgetl.errors import CheckFailedError
from edgetl.progress import say
from edgetl.runner.ranking import Retimer


def session_options(path: Path, options: Any, provider: str | None = None,
                    runtime: str | None = None) -> dict[str, Any]:
    """How a row's runtime opens the file: a GPU provider's chain, TFLM instead of LiteRT, the bench's settings."""
    if runtime in ("tflm", "openvino"):
        return {"runtime": runtime}
    if path.suffix == ".tflite":
        return {"xnnpack": options.xnnpack}
    if provider:
        from edgetl.targets.ort import PROVIDER_CHAIN

        return {"optimization": options.ort_optimization, "providers": list(PROVIDER_CHAIN[provider])}
    return {"optimization": options.ort_optimization}


def time_in_worker(path: Path, images: np.ndarray, options: Any, scratch: Path, provider: str | None = None,
                   runtime: str | None = None) -> dict[str, Any]:
    """Latency per thread count, batch throughput and peak RSS of one file, in a fresh process."""
    sample = scratch / "input.npy"
    np.save(sample, np.ascontiguousarray(images[:max(1, options.throughput_batch)]))
    spec = {"path": str(path), "input": str(sample), "threads": list(options.threads), "warmup": options.warmup,
            "min_runs": options.min_runs, "min_seconds": options.min_seconds,
            "throughput_batch": min(options.throughput_batch, len(images)),
            "session_options": session_options(path, options, provider, runtime)}
    return _run_worker(spec, scratch, str(path))


def _run_worker(spec: dict[str, Any], scratch: Path, what: str) -> dict[str, Any]:
    spec_path = scratch / "spec.json"
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "edgetl.runner.bench_worker", str(spec_path)], capture_output=True,
                          text=True, timeout=1800)
    if done.returncode != 0:
        raise CheckFailedError(f"{what}: benchmark process failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def side_by_side_retimer(entries: list[Any], image_path: str, options: Any) -> Retimer:
    """The recommendation's re-timing: its shortlisted configurations, on one validation image each,
    opened at once in a fresh process and timed interleaved (edgetl.runner.latency.interleaved)."""
    by_path = {str(e.path): e for e in entries}

    def retime(configurations: list[tuple[str, str | None, int]]) -> list[dict[str, float]]:
        say(f"recommendation: timing {len(configurations)} close configuration(s) side by side")
        with tempfile.TemporaryDirectory() as scratch:
            items = []
            for index, (path, runtime, provider, threads) in enumerate(configurations):
                entry = by_path[path]
                image = load_images([image_path], entry.image_size, entry.preprocessing)
                sample = Path(scratch) / f"input{index}.npy"
                np.save(sample, np.ascontiguousarray(image.transpose(0, 3, 1, 2) if entry.nchw else image))
                items.append({"path": path, "threads": threads, "input": str(sample),
                              "session_options": session_options(Path(path), options, provider, runtime)})
            spec = {"mode": "side-by-side", "configurations": items, "min_seconds": max(options.min_seconds, 0.2)}
            return _run_worker(spec, Path(scratch), "side-by-side timing")["timings"]

    return retime
