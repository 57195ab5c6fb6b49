"""The latency harness: warm-up, then timed runs until both a minimum count and a minimum time are met.

Percentiles use linear interpolation between order statistics (numpy's default), so p50 of an even
count is the mean of the two middle runs. The clock is injectable so the statistics can be tested
exactly with a fake clock.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np

Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    threads: int
    batch: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    first_ms: float
    load_ms: float

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


def time_runs(invoke: Callable[[], Any], *, warmup: int, min_runs: int, min_seconds: float,
              max_runs: int = 1_000_000, clock: Clock = time.perf_counter) -> list[float]:
    """Durations in seconds of each timed call of `invoke`, after `warmup` untimed calls."""
    for _ in range(warmup):
        invoke()
    durations: list[float] = []
    total = 0.0
    while len(durations) < max_runs and (len(durations) < min_runs or total < min_seconds):
        started = clock()
        invoke()
        elapsed = clock() - started
        durations.append(elapsed)
        total += elapsed
    return durations


def summarize(durations: list[float], *, threads: int, batch: int, first: float, load: float) -> LatencyStats:
    ms = np.asarray(durations, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(threads=threads, batch=batch, runs=len(ms), p50_ms=float(p50), p90_ms=float(p90),
                        p99_ms=float(p99), mean_ms=float(ms.mean()), std_ms=float(ms.std()),
                        first_ms=first * 1000.0, load_ms=load * 1000.0)


def measure(open_session: Callable[[], Any], images: np.ndarray, *, threads: int, warmup: int, min_runs: int,
            min_seconds: float, clock: Clock = time.perf_counter) -> LatencyStats:
    """Load (timed), first inference (timed), then the timed loop on the same prepared input."""
    started = clock()
    session = open_session()
    load = clock() - started
    invoke = session.prepare(images)
    started = clock()
    invoke()
    first = clock() - started
    durations = time_runs(invoke, warmup=warmup, min_runs=min_runs, min_seconds=min_seconds, clock=clock)
    return summarize(durations, threads=threads, batch=len(images), first=first, load=load)
