"""One artifact's latency, measured in a fresh process so its peak RSS is its own; or, for the
recommendation's shortlist, several configurations timed side by side in one process.

Run as `python -m edgetl.runner.bench_worker SPEC.json`; prints one JSON document. It imports only the
runtimes it needs (no TensorFlow), which is also what an app on the device would load.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _opener(path: Path, threads: int, session_options: dict[str, Any]):
    from edgetl.targets import open_session

    if path.suffix == ".tflite":
        return lambda: open_session(path, num_threads=threads, **session_options)
    return lambda: open_session(path, intra_op_threads=threads, **session_options)


def run_side_by_side(spec: dict[str, Any]) -> dict[str, Any]:
    """Each configuration (path, threads, session options, input file) opened at once and timed interleaved."""
    from edgetl.runner.latency import interleaved

    calls = {}
    for index, item in enumerate(spec["configurations"]):
        session = _opener(Path(item["path"]), item["threads"], item.get("session_options", {}))()
        calls[index] = session.prepare(np.load(item["input"]))
    timings = interleaved(calls, spec["min_seconds"])
    return {"timings": [timings[index] for index in range(len(calls))]}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from edgetl.runner.latency import measure

    if spec.get("mode") == "side-by-side":
        return run_side_by_side(spec)
    path = Path(spec["path"])
    images = np.load(spec["input"])
    session_options = spec.get("session_options", {})

    latency = [measure(_opener(path, threads, session_options), images[:1], threads=threads, warmup=spec["warmup"],
                       min_runs=spec["min_runs"], min_seconds=spec["min_seconds"]).to_json()
               for threads in spec["threads"]]
    batch = spec["throughput_batch"]
    throughput = None
    if batch > 1:
        threads = max(spec["threads"])
        try:
            stats = measure(_opener(path, threads, session_options), images[:batch], threads=threads, warmup=2,
                            min_runs=max(3, spec["min_runs"] // batch), min_seconds=spec["min_seconds"])
            throughput = {"batch": len(images[:batch]), "threads": threads, "p50_ms": round(stats.p50_ms, 4),
                          "images_per_s": round(len(images[:batch]) / (stats.p50_ms / 1000.0), 1)}
        except RuntimeError:  # a graph fixed to batch 1 (LiteRT cannot resize it): no batch throughput
            pass
    # ru_maxrss is in KiB on Linux.
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"latency": latency, "throughput": throughput, "peak_rss_bytes": int(peak_rss)}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(run(spec)))


if __name__ == "__main__":
    main()
