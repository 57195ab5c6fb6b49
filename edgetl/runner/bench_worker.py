"""One artifact's latency, measured in a fresh process so its peak RSS is its own.

Run as `python -m edgetl.runner.bench_worker SPEC.json`; prints one JSON document. It imports only the
runtime it needs (no TensorFlow), which is also what an app on the device would load.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from edgetl.runner.latency import measure
    from edgetl.targets import open_session

    path = Path(spec["path"])
    images = np.load(spec["input"])
    session_options = spec.get("session_options", {})

    def opener(threads: int):
        if path.suffix == ".tflite":
            return lambda: open_session(path, num_threads=threads, **session_options)
        return lambda: open_session(path, intra_op_threads=threads, **session_options)

    latency = [measure(opener(threads), images[:1], threads=threads, warmup=spec["warmup"],
                       min_runs=spec["min_runs"], min_seconds=spec["min_seconds"]).to_json()
               for threads in spec["threads"]]
    batch = spec["throughput_batch"]
    throughput = None
    if batch > 1:
        threads = max(spec["threads"])
        try:
            stats = measure(opener(threads), images[:batch], threads=threads, warmup=2,
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
