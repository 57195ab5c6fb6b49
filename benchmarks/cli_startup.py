"""`edgetl --help` wall time beside a bare `import tensorflow`, measured side by side in one run.

Goal (DESIGN.md, issue #10): `edgetl --help` < 0.5 s, because it imports no TensorFlow.
Run: python benchmarks/cli_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def wall(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "edgetl --help": [sys.executable, "-m", "edgetl", "--help"],
        "python -c 'import tensorflow'": [sys.executable, "-c", "import tensorflow"],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):  # interleaved, so load on the machine affects every case alike
        for name, cmd in cases.items():
            times[name].append(wall(cmd))
    print(f"{'case':<32} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, values in times.items():
        print(f"{name:<32} {statistics.median(values):>9.3f} {min(values):>7.3f} {max(values):>7.3f}")
    ratio = statistics.median(times["edgetl --help"]) / statistics.median(times["python -c 'import tensorflow'"])
    print(f"edgetl --help / import tensorflow: {ratio:.3f}")


if __name__ == "__main__":
    main()
