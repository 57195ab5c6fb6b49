"""The latency harness: warm-up, then timed runs until both a minimum count and a minimum time are met;
and `interleaved`, several sessions timed side by side.

Percentiles use linear interpolation between order statistics (numpy's default), so p50 of an even
count is the mean of the two middle runs. The clock is injectable so the statistics can be tested
exactly with a fake clock.
"""

from __future__ import annotations

import dataclasses
import math
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


def median_interval(durations_ms: list[float] | np.ndarray) -> tuple[float, float]:
    """A distribution-free 95 % confidence interval of the median: the order statistics n/2 ± 0.98·sqrt(n)
    (the normal approximation to the binomial)."""
    ordered = np.sort(np.asarray(durations_ms, dtype=np.float64))
    n = len(ordered)
    half_width = 0.98 * math.sqrt(n)
    low, high = max(0, math.floor(n / 2 - half_width)), min(n - 1, math.ceil(n / 2 + half_width))
    return float(ordered[low]), float(ordered[high])


def interleaved(calls: dict[Any, Callable[[], Any]], min_time: float, block_seconds: float = 0.05, skip: int = 3,
                pause: float = 0.02, min_runs: int = 30, min_turns: int = 20) -> dict[Any, dict[str, float]]:
    """Time prepared inference calls side by side: all sessions open at once and take turns in blocks of at
    least 10 inferences and `block_seconds`, until each has run `min_time` seconds and `min_runs` times. A
    load burst or a slow spell of a shared machine, which on 2 vCPUs lasts from a second to minutes, then
    falls on every session alike, so their ratios hold even when absolute times drift. Not timed: the
    first `skip` runs of a block (the caches still hold another model) and a `pause` between blocks
    (ONNX Runtime's worker threads spin for a while after a run and would slow whichever session comes
    next). Each session gets at least `min_turns` turns, so that one slow spell cannot land on one session
    alone (measured: the same 30 us file timed twice in six 50 ms turns each came out up to 27 % apart; shorter
    turns instead of more of them idle the CPU more and slowed every session by a third). Per call: p50, p25,
    p75 and the median's 95 % interval in ms, and the run count."""
    for call in calls.values():
        for _ in range(10):
            call()
    durations: dict[Any, list[float]] = {key: [] for key in calls}
    spent = {key: 0.0 for key in calls}
    turns = 0
    while min(spent.values()) < min_time or min(len(d) for d in durations.values()) < min_runs or turns < min_turns:
        turns += 1
        for key, call in calls.items():
            time.sleep(pause)
            index, block_started = 0, time.perf_counter()
            while index < 10 or time.perf_counter() - block_started < block_seconds:
                started = time.perf_counter()
                call()
                elapsed = time.perf_counter() - started
                spent[key] += elapsed
                if index >= skip:
                    durations[key].append(elapsed * 1000.0)
                index += 1
    result = {}
    for key, values in durations.items():
        q25, q50, q75 = np.percentile(values, [25, 50, 75])
        low, high = median_interval(values)
        result[key] = {"p50_ms": float(q50), "p25_ms": float(q25), "p75_ms": float(q75), "ci_low_ms": low,
                       "ci_high_ms": high, "runs": len(values)}
    return result
