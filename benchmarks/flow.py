"""The whole-flow parts of the performance suite (issue #10): `edgetl demo` wall time, whether its
recommendation is the fastest artifact that passes when re-timed independently, and the
frozen-backbone training throughput of the feature cache (benchmarks/transfer.py).

    python benchmarks/flow.py [--out DIR]     (also run by `python -m benchmarks`)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEMO_GOAL_SECONDS = 600
RECOMMENDED_GOAL = 1.05
THROUGHPUT_GOAL = 10.0


def demo_and_recommendation(scratch: Path, min_time: float) -> dict[str, Any]:
    """Run `edgetl demo` as a user would (a fresh process), then re-time every artifact that passed the
    budget, interleaved, at the target's thread count: recommended p50 / fastest p50."""
    from benchmarks.timing import interleaved_p50
    from edgetl.targets import open_session

    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edgetl", "demo", "-o", str(scratch / "demo"), "--json"],
                          capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"edgetl demo failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    report = json.loads((Path(result["report_dir"]) / "report.json").read_text())
    recommended = result["recommended"]
    target, threads = report["compress"]["target"], recommended["threads"]
    # What the recommendation chose among: passed the gate and the target's checks.
    passing = {e["name"]: Path(e["path"]) for e in report["artifacts"]
               if not e["skipped"] and e["gate"]["passed"] and not e["target_checks"].get(target)}
    image = _one_image(result["run"])
    def opener(path: Path) -> Any:
        key = "num_threads" if path.suffix == ".tflite" else "intra_op_threads"
        return lambda: open_session(path, **{key: threads})

    openers = {name: opener(path) for name, path in passing.items()}
    p50, _ = interleaved_p50(openers, image, min_time)
    fastest = min(p50, key=p50.get)
    return {"demo_seconds": round(seconds, 1), "demo_reported_seconds": result["seconds"],
            "recommended": recommended["name"], "fastest_retimed": fastest, "threads": threads,
            "p50_ms": {k: round(v, 4) for k, v in p50.items()},
            "recommended_over_fastest": round(p50[recommended["name"]] / p50[fastest], 3)}


def _one_image(run: str) -> Any:
    from edgetl.artifacts.run_dir import Run, load_images

    opened = Run.open(run)
    paths, _ = opened.sample("val", 1)
    return load_images(paths, opened.image_size, opened.preprocessing)


def frozen_training_throughput(scratch: Path) -> dict[str, Any]:
    from benchmarks import transfer

    transfer.main(["--out", str(scratch / "transfer")])
    results = json.loads((scratch / "transfer" / "transfer.json").read_text())
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--min-time", type=float, default=1.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgetl-flow-") as tmp:
        results = {"flow": demo_and_recommendation(Path(tmp), args.min_time),
                   "transfer": frozen_training_throughput(Path(tmp))}
    (args.out / "flow.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
