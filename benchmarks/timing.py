"""Side-by-side timing shared by the suite (benchmarks/suite.py) and the whole-flow parts (benchmarks/flow.py)."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np


def interleaved_p50(openers: dict[Any, Callable[[], Any]], image: np.ndarray, min_time: float,
                    block_seconds: float = 0.05, skip: int = 3,
                    pause: float = 0.02) -> tuple[dict[Any, float], dict[Any, dict[str, float]]]:
    """p50 ms of each session, measured side by side: all sessions open at once and take turns in blocks
    of at least 10 inferences and `block_seconds`, until each has run `min_time` seconds. A load burst or
    a slow spell of the shared machine, which on 2 vCPUs lasts from a second to minutes, then falls on
    every file alike, so ratios hold even when absolute times drift. Not timed: the first `skip` runs
    of a block (the caches still hold another model) and a `pause` between blocks (ONNX Runtime's
    worker threads spin for a while after a run and would slow whichever session comes next).
    Also returns each session's p25/p75 and run count."""
    calls = {key: opener().prepare(image) for key, opener in openers.items()}
    for call in calls.values():
        for _ in range(10):
            call()
    durations: dict[Any, list[float]] = {key: [] for key in calls}
    spent = {key: 0.0 for key in calls}
    while min(spent.values()) < min_time or min(len(d) for d in durations.values()) < 30:
        for key, call in calls.items():
            time.sleep(pause)
            index, block_started = 0, time.perf_counter()
            while index < 10 or time.perf_counter() - block_started < block_seconds:
                started = time.perf_counter()
                call()
                elapsed = time.perf_counter() - started
                spent[key] += elapsed
                if index >= skip:
                    durations[key].append(elapsed)
                index += 1
    p50, spread = {}, {}
    for key, values in durations.items():
        q25, q50, q75 = np.percentile(np.asarray(values) * 1000.0, [25, 50, 75])
        p50[key] = float(q50)
        spread[key] = {"p25_ms": round(float(q25), 4), "p75_ms": round(float(q75), 4), "runs": len(values)}
    return p50, spread
