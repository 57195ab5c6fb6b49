"""The recommendation: which configuration to ship per target, an (artifact, runtime, thread count).

Each artifact is first timed in its own process, one after the other; on a shared 2-core machine a
slow spell can then fall on one file and not the next, so two files a few percent apart swap places
between runs. The shortlist (configurations within `SHORTLIST_RATIO` of the fastest) is therefore
timed again side by side (`latency.interleaved`: open at once, taking turns), and configurations
within `TIE_TOLERANCE` of the fastest, or whose medians' 95 % intervals overlap its, are tied. A tie
goes to the smaller file, then the one with fewer float ops, then fewer threads: on a device they
cost flash, memory bandwidth and cores, while the speed is the same within what can be measured.

An extra thread is a core taken from the app, and what it buys varies with what else the machine runs
(on this 2-vCPU host a second thread measured from 1.7x faster, idle, to slower, busy, minutes apart):
configurations are ranked by `cost_ms`, the p50 times THREAD_PRICE per extra thread, so more threads
win only when they save at least 20 % of the time.

Thread counts: a profile's `threads` is how many cores the device gives the app; every measured
count up to it is a choice, and the recommendation says which to use and why.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

TIE_TOLERANCE = 0.05  # within 5 % of the fastest is a tie
SHORTLIST_RATIO = 1.3  # configurations within 30 % of the fastest separate measurement are re-timed together
MAX_RETIMED = 8
THREAD_PRICE = 1.25  # each extra thread must cut the time to 1/1.25 = 80 % to be worth its core

# [(path, runtime, ONNX Runtime provider or None, threads)] -> [{"p50_ms", "ci_low_ms", "ci_high_ms", "runs"}]:
# the side-by-side timing of each configuration, in order.
Retimer = Callable[[list[tuple[str, str, str | None, int]]], list[dict[str, float]]]


@dataclasses.dataclass
class Configuration:
    entry: dict[str, Any]
    threads: int
    p50_ms: float  # the separate measurement, replaced by the side-by-side one when re-timed
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    retimed: bool = False

    @property
    def name(self) -> str:
        return self.entry["name"]

    @property
    def price(self) -> float:
        return THREAD_PRICE ** (self.threads - 1)

    @property
    def cost_ms(self) -> float:
        return self.p50_ms * self.price

    def key(self) -> tuple[str, str, str | None, int]:
        return (self.entry["path"], self.entry.get("runtime"), self.entry.get("provider"), self.threads)

    def to_json(self, tied: bool) -> dict[str, Any]:
        return {"artifact": self.name, "threads": self.threads, "p50_ms": round(self.p50_ms, 4),
                "ci_ms": [round(self.ci_low_ms, 4), round(self.ci_high_ms, 4)] if self.retimed else None,
                "bytes": self.entry["bytes"], "float_ops": self.entry.get("float_ops"), "tied": tied}


def thread_choices(entry: dict[str, Any], profile: Any) -> list[dict[str, Any]]:
    """The entry's latency rows a device of this profile can use: thread counts up to the profile's
    (when every measured count is larger, the smallest one)."""
    rows = entry.get("latency") or []
    usable = [r for r in rows if r["threads"] <= profile.threads]
    return usable or sorted(rows, key=lambda r: r["threads"])[:1]


def recommend(entries: list[dict[str, Any]], profiles: list[Any], retime: Retimer | None = None) -> dict[str, Any]:
    """Per target: the configuration to ship among the artifacts that pass the gate and the target's checks."""
    out = {}
    for profile in profiles:
        # The target checks include the format: an artifact the target cannot run never qualifies.
        candidates = [e for e in entries if not e["skipped"] and e["gate"]["passed"]
                      and not e["target_checks"].get(profile.name) and runs_on(e, profile, entries)]
        configurations = [Configuration(e, row["threads"], row["p50_ms"]) for e in candidates
                          for row in thread_choices(e, profile)]
        if not configurations:
            out[profile.name] = {"artifact": None,
                                 "reason": f"no artifact passes the gate and the {profile.name} target checks"}
            continue
        out[profile.name] = _rank(configurations, profile, retime)
    return out


def _rank(configurations: list[Configuration], profile: Any, retime: Retimer | None) -> dict[str, Any]:
    shortlist = _shortlist(configurations)
    if retime is not None and len(shortlist) > 1:
        for configuration, timing in zip(shortlist, retime([c.key() for c in shortlist])):
            configuration.p50_ms, configuration.retimed = timing["p50_ms"], True
            configuration.ci_low_ms, configuration.ci_high_ms = timing["ci_low_ms"], timing["ci_high_ms"]
    fastest = min(shortlist, key=lambda c: c.cost_ms)
    tied = [c for c in shortlist if _tied(c, fastest)]
    chosen = min(tied, key=lambda c: (c.entry["bytes"], c.entry.get("float_ops") or 0, c.threads, c.cost_ms))
    return {"artifact": chosen.name, "path": chosen.entry["path"], "runtime": chosen.entry.get("runtime"),
            "provider": chosen.entry.get("provider"), "p50_ms": round(chosen.p50_ms, 4), "threads": chosen.threads,
            "profile_threads": profile.threads, "reason": _reason(chosen, fastest, tied),
            "thread_advice": _thread_advice(chosen, configurations, profile),
            "retimed_side_by_side": any(c.retimed for c in shortlist), "tie_tolerance": TIE_TOLERANCE,
            "thread_price": THREAD_PRICE,
            "considered": [c.to_json(c in tied) for c in sorted(shortlist, key=lambda c: c.p50_ms)]}


def _shortlist(configurations: list[Configuration]) -> list[Configuration]:
    """Near the fastest, plus every thread count of those artifacts (so the thread advice is measured
    side by side too), at most MAX_RETIMED."""
    best = min(c.p50_ms for c in configurations)
    near = {c.name for c in configurations if c.p50_ms <= best * SHORTLIST_RATIO}
    chosen = sorted((c for c in configurations if c.name in near), key=lambda c: c.p50_ms)
    return chosen[:MAX_RETIMED]


def _tied(configuration: Configuration, fastest: Configuration) -> bool:
    if configuration.cost_ms <= fastest.cost_ms * (1 + TIE_TOLERANCE):
        return True
    return (configuration.retimed and fastest.retimed
            and configuration.ci_low_ms * configuration.price <= fastest.ci_high_ms * fastest.price)


def _reason(chosen: Configuration, fastest: Configuration, tied: list[Configuration]) -> str:
    where = "side by side" if chosen.retimed else "one after the other"
    if chosen is fastest:
        others = len(tied) - 1
        tail = f"; {others} other configuration(s) within noise are larger or use more threads" if others else ""
        return f"fastest configuration that passes the gate and the target checks (timed {where}){tail}"
    slower = 100 * (chosen.cost_ms / fastest.cost_ms - 1)
    why = [label for label, differs in (
        (f"smaller file ({chosen.entry['bytes']:,} vs {fastest.entry['bytes']:,} bytes)",
         chosen.entry["bytes"] < fastest.entry["bytes"]),
        (f"fewer float ops ({chosen.entry.get('float_ops')} vs {fastest.entry.get('float_ops')})",
         chosen.entry["bytes"] == fastest.entry["bytes"]
         and (chosen.entry.get("float_ops") or 0) < (fastest.entry.get("float_ops") or 0)),
        (f"fewer threads ({chosen.threads} vs {fastest.threads})", chosen.threads < fastest.threads)) if differs]
    return (f"tied with the fastest, {fastest.name} at {fastest.threads} thread(s) ({slower:+.1f} %, within "
            f"{TIE_TOLERANCE:.0%} or the timing's noise, timed {where}): {'; '.join(why) or 'same cost'}")


def _thread_advice(chosen: Configuration, configurations: list[Configuration], profile: Any) -> str:
    """One line: which thread count to use for this file, and what the other counts measured."""
    same = sorted((c for c in configurations if c.name == chosen.name), key=lambda c: c.threads)
    word = "thread" if chosen.threads == 1 else "threads"
    others = [c for c in same if c.threads != chosen.threads]
    if not others:
        measured = f"the only count measured up to the target's {profile.threads}"
        return f"use {chosen.threads} {word}: {measured}"
    parts = []
    for other in others:
        ratio = other.p50_ms / chosen.p50_ms
        if other.threads > chosen.threads and ratio > 1 + TIE_TOLERANCE:
            verdict = "slower"
        elif other.threads > chosen.threads and ratio >= 1 - TIE_TOLERANCE:
            verdict = "no faster (within noise)"
        elif other.threads > chosen.threads:
            verdict = f"save only {1 - ratio:.0%}, less than the {1 - 1 / THREAD_PRICE:.0%} an extra thread must buy"
        else:
            verdict = f"{ratio:.2f}× the time"
        parts.append(f"{other.threads} {'thread' if other.threads == 1 else 'threads'} {verdict} "
                     f"({other.p50_ms:.3f} vs {chosen.p50_ms:.3f} ms)")
    return f"use {chosen.threads} {word}: " + "; ".join(parts)


def runs_on(entry: dict[str, Any], profile: Any, entries: list[dict[str, Any]] = ()) -> bool:
    """A row measured on a GPU provider speaks only for targets that list that provider, an OpenVINO row for
    targets that list OpenVINO among their runtimes. A TFLM row speaks
    for TFLM targets only, and for them the TFLM rows are the ones that count, when TFLM measured any
    (without it, the LiteRT rows stand in, their checks on the estimated arena)."""
    if profile.runtime == "tflm" and any(e.get("runtime") == "tflm" and not e["skipped"] for e in entries):
        return entry.get("runtime") == "tflm"
    if entry.get("runtime") == "tflm":
        return profile.runtime == "tflm"
    if entry.get("runtime") == "openvino":
        return "openvino" in profile.usable_runtimes
    provider = entry.get("provider")
    return provider in (None, "CPUExecutionProvider") or provider in profile.execution_providers
