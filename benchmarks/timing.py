"""Side-by-side timing shared by the suite (benchmarks/suite.py) and the whole-flow parts (benchmarks/flow.py):
edgetl's own `interleaved` (what the recommendation re-times its shortlist with), over sessions opened here."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from edgetl.runner.latency import interleaved


def interleaved_p50(openers: dict[Any, Callable[[], Any]], image: np.ndarray,
                    min_time: float) -> tuple[dict[Any, float], dict[Any, dict[str, float]]]:
    """p50 ms of each session, timed side by side (see edgetl.runner.latency.interleaved), and each
    session's p25/p75 and run count."""
    timings = interleaved({key: opener().prepare(image) for key, opener in openers.items()}, min_time)
    p50 = {key: t["p50_ms"] for key, t in timings.items()}
    spread = {key: {"p25_ms": round(t["p25_ms"], 4), "p75_ms": round(t["p75_ms"], 4), "runs": t["runs"]}
              for key, t in timings.items()}
    return p50, spread
