"""Where the time goes: ONNX Runtime's per-node profile of one backbone, fp32 vs int8, 1 and 2 threads.

    python benchmarks/profile_ops.py [--backbone mobilenet_v3_small] [--runs 200]

The suite's files (224 px, alpha 1.0, realistic random weights), profiled with ORT's built-in
profiler; prints, per file and thread count, the share of kernel time by op type and the op types'
total. Used to explain the goals the suite misses (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def profile(path: Path, threads: int, runs: int) -> dict[str, float]:
    """Mean microseconds per inference by op type, from ORT's profile of `runs` inferences."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(f".{threads}t"))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)}
    warmup = 20
    for _ in range(warmup + runs):
        session.run(None, feed)
    trace = session.end_profiling()
    events = json.loads(Path(trace).read_text())
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    measured_from = starts[warmup]  # warm-up inferences excluded
    by_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= measured_from:
            by_op[event["args"]["op_name"]] += event["dur"]
    Path(trace).unlink()
    return {op: us / runs for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.suite import export_files

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v3_small")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files, _ = export_files(args.backbone, Path(tmp))
        for name in ("onnx-none", "onnx-int8"):
            for threads in (1, 2):
                ops = profile(files[name], threads, args.runs)
                total = sum(ops.values())
                print(f"\n{args.backbone} {name} {threads} thread(s): {total / 1000:.3f} ms of kernel time per inference")
                for op, us in list(ops.items())[:12]:
                    print(f"  {op:<24} {us / 1000:8.3f} ms  {100 * us / total:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
