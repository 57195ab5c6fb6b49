"""The recommendation: a configuration (artifact, thread count), re-timed side by side, ties to the smaller file.

The ranking rules are tested on constructed rows with a stand-in re-timer (what it returns is the
input here); the real side-by-side timing runs on real files in test_bench and on the demo model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edgetl.runner.latency import median_interval
from edgetl.runner.ranking import TIE_TOLERANCE, recommend
from edgetl.targets.profiles import load_profile

X86 = load_profile("x86-cpu")  # threads = 4
SAME_FILE_NOISE = 0.15  # one tiny file timed twice side by side (see the test that measures it)


def row(name: str, size: int, p50: dict[int, float], float_ops: int = 0) -> dict:
    return {"name": name, "path": f"/models/{name}", "bytes": size, "float_ops": float_ops, "skipped": None,
            "gate": {"passed": True}, "target_checks": {"x86-cpu": []}, "runtime": "litert",
            "latency": [{"threads": n, "p50_ms": ms} for n, ms in p50.items()]}


def retimer(truth: dict[tuple[str, int], float], spread: float = 0.002):
    """Side-by-side timings as given by `truth` (name, threads) -> ms, with a narrow interval; records calls."""
    calls = []

    def retime(keys):
        calls.append(keys)
        out = []
        for path, _, _, threads in keys:
            ms = truth[(Path(path).name, threads)]
            out.append({"p50_ms": ms, "ci_low_ms": ms - spread, "ci_high_ms": ms + spread, "runs": 100})
        return out

    retime.calls = calls
    return retime


def test_a_tie_within_the_tolerance_goes_to_the_smaller_file_and_says_so():
    rows = [row("tflite-none", 1_600_000, {1: 0.100, 2: 0.130}), row("tflite-int8", 620_000, {1: 0.104, 2: 0.137})]
    chosen = recommend(rows, [X86], retimer({("tflite-none", 1): 0.100, ("tflite-none", 2): 0.131,
                                              ("tflite-int8", 1): 0.104, ("tflite-int8", 2): 0.137}))["x86-cpu"]
    assert (chosen["artifact"], chosen["threads"]) == ("tflite-int8", 1)
    assert "smaller file (620,000 vs 1,600,000 bytes)" in chosen["reason"] and "tflite-none" in chosen["reason"]
    assert chosen["thread_advice"].startswith("use 1 thread: 2 threads slower")
    assert chosen["retimed_side_by_side"]
    tied = {(c["artifact"], c["threads"]) for c in chosen["considered"] if c["tied"]}
    assert tied == {("tflite-none", 1), ("tflite-int8", 1)}


def test_a_clear_win_beats_a_smaller_file():
    rows = [row("fast-big", 2_000_000, {1: 1.0}), row("slow-small", 500_000, {1: 1.3})]
    chosen = recommend(rows, [X86], retimer({("fast-big", 1): 1.0, ("slow-small", 1): 1.0 * (1 + 2 * TIE_TOLERANCE)}))
    assert chosen["x86-cpu"]["artifact"] == "fast-big"
    assert chosen["x86-cpu"]["reason"].startswith("fastest configuration")


def test_the_side_by_side_timing_overrules_the_separate_one():
    """Measured one after the other, `a` looked fastest (a slow spell fell on `b`); side by side `b` wins."""
    rows = [row("a", 1_000_000, {1: 1.00}), row("b", 1_000_000, {1: 1.20})]
    retime = retimer({("a", 1): 1.00, ("b", 1): 0.80})
    chosen = recommend(rows, [X86], retime)["x86-cpu"]
    assert chosen["artifact"] == "b" and chosen["p50_ms"] == 0.80
    assert sorted(Path(p).name for p, _, _, _ in retime.calls[0]) == ["a", "b"]


def test_overlapping_intervals_are_a_tie_even_beyond_the_tolerance():
    rows = [row("big", 3_000_000, {1: 1.0}), row("small", 1_000_000, {1: 1.08})]
    chosen = recommend(rows, [X86], retimer({("big", 1): 1.0, ("small", 1): 1.08}, spread=0.05))["x86-cpu"]
    assert chosen["artifact"] == "small"
    narrow = recommend(rows, [X86], retimer({("big", 1): 1.0, ("small", 1): 1.08}, spread=0.01))["x86-cpu"]
    assert narrow["artifact"] == "big"


def test_equal_files_tie_break_on_float_ops_then_threads():
    rows = [row("float", 1_000_000, {1: 1.0, 2: 0.99}, float_ops=40), row("int", 1_000_000, {1: 1.01, 2: 1.0},
                                                                          float_ops=3)]
    chosen = recommend(rows, [X86], retimer({("float", 1): 1.0, ("float", 2): 0.99, ("int", 1): 1.01,
                                              ("int", 2): 1.0}))["x86-cpu"]
    assert (chosen["artifact"], chosen["threads"]) == ("int", 1)  # fewer float ops; 2 threads buy nothing
    assert "fewer float ops (3 vs 40)" in chosen["reason"]
    assert "2 threads no faster (within noise)" in chosen["thread_advice"]


def test_an_extra_thread_must_save_a_fifth_of_the_time():
    """A second core that buys 10 % is not worth taking from the app (and whether it buys anything on a shared
    machine varies from minute to minute); one that buys 40 % is."""
    small = recommend([row("m", 1_000_000, {1: 1.0, 2: 0.9})], [X86], retimer({("m", 1): 1.0, ("m", 2): 0.9}))
    assert small["x86-cpu"]["threads"] == 1
    assert small["x86-cpu"]["thread_advice"] == ("use 1 thread: 2 threads save only 10%, less than the 20% an extra "
                                                 "thread must buy (0.900 vs 1.000 ms)")
    large = recommend([row("m", 1_000_000, {1: 1.0, 2: 0.6})], [X86], retimer({("m", 1): 1.0, ("m", 2): 0.6}))
    assert large["x86-cpu"]["threads"] == 2


def test_more_threads_are_used_when_they_pay_and_never_beyond_the_targets_cores():
    rows = [row("m", 1_000_000, {1: 2.0, 2: 1.1, 8: 0.5})]
    chosen = recommend(rows, [X86], retimer({("m", 1): 2.0, ("m", 2): 1.1}))["x86-cpu"]
    assert chosen["threads"] == 2 and chosen["profile_threads"] == 4  # 8 threads: more than the device has
    assert chosen["thread_advice"] == "use 2 threads: 1 thread 1.82× the time (2.000 vs 1.100 ms)"
    single = recommend(rows, [load_profile("mcu")], None)["mcu"]  # 1 thread; nothing re-timed, one choice
    assert single["threads"] == 1 and not single["retimed_side_by_side"]


def test_tflm_rows_speak_for_microcontroller_targets_only_and_are_retimed_in_tflm():
    litert = row("small", 100_000, {1: 0.03}) | {"target_checks": {"x86-cpu": [], "mcu": []}}
    micro = [row(name, size, {1: ms}) | {"name": f"{name}@tflm", "runtime": "tflm", "path": f"/models/{name}",
                                         "target_checks": {"x86-cpu": [], "mcu": []}}
             for name, size, ms in (("small", 100_000, 2.0), ("big", 300_000, 1.95))]
    retime = retimer({("small", 1): 2.0, ("big", 1): 1.95})
    chosen = recommend([litert, *micro], [X86, load_profile("mcu")], retime)
    assert chosen["x86-cpu"]["artifact"] == "small"
    assert chosen["mcu"]["artifact"] == "small@tflm" and "smaller file" in chosen["mcu"]["reason"]
    assert {key[1] for key in retime.calls[0]} == {"tflm"}  # timed in TFLM, not in LiteRT


def test_openvino_rows_speak_only_for_targets_that_list_openvino():
    onnx = row("onnx-int8", 100_000, {1: 1.0}) | {"runtime": "onnxruntime", "target_checks": {"x86-cpu": [], "ort": []}}
    openvino = onnx | {"name": "onnx-int8@openvino", "runtime": "openvino", "latency": [{"threads": 1, "p50_ms": 0.8}]}
    ort_only = dataclasses.replace(X86, name="ort", runtime="onnxruntime", formats=("onnx",), runtimes=())
    chosen = recommend([onnx, openvino], [X86, ort_only])
    assert chosen["x86-cpu"]["artifact"] == "onnx-int8@openvino" and chosen["x86-cpu"]["runtime"] == "openvino"
    assert chosen["ort"]["artifact"] == "onnx-int8"  # a target without OpenVINO never gets its row


def test_without_a_retimer_the_separate_timings_rank_with_the_same_rules():
    rows = [row("tflite-none", 1_600_000, {1: 0.100}), row("tflite-int8", 620_000, {1: 0.103})]
    chosen = recommend(rows, [X86])["x86-cpu"]
    assert chosen["artifact"] == "tflite-int8" and "one after the other" in chosen["reason"]


def test_nothing_passing_is_no_recommendation_with_the_reason():
    failed = row("bad", 1000, {1: 0.1}) | {"gate": {"passed": False}}
    assert recommend([failed], [X86])["x86-cpu"] == {
        "artifact": None, "reason": "no artifact passes the gate and the x86-cpu target checks"}


def test_median_interval_brackets_the_median_and_narrows_with_more_runs():
    rng = np.random.default_rng(0)
    few, many = rng.exponential(1.0, 50), rng.exponential(1.0, 5000)
    for sample in (few, many):
        low, high = median_interval(sample)
        assert low <= np.median(sample) <= high
    assert np.subtract(*median_interval(many)[::-1]) < np.subtract(*median_interval(few)[::-1]) / 5
    assert median_interval([3.0]) == (3.0, 3.0)


@pytest.mark.slow
def test_one_file_timed_side_by_side_with_itself_is_a_tie(run, exported):
    """The real re-timer (a fresh process, sessions taking turns): the same file twice measures within noise,
    and another file's row comes back in the order asked."""
    from edgetl.artifacts.run_dir import Run
    from edgetl.runner.bench import BenchOptions, collect
    from edgetl.runner.workers import side_by_side_retimer

    folders = [str(run / "artifacts" / "tflite-int8"), str(run / "artifacts" / "onnx-none")]
    options = BenchOptions(min_seconds=0.3)
    entries = collect(folders, options)
    int8, onnx = (str(e.path) for e in entries)
    retime = side_by_side_retimer(entries, Run.open(run).splits[1].paths[0], options)
    first, second, other = retime([(int8, "litert", None, 1), (int8, "litert", None, 1),
                                   (onnx, "onnxruntime", None, 1)])
    assert all(t["runs"] >= 30 and t["ci_low_ms"] <= t["p50_ms"] <= t["ci_high_ms"] for t in (first, second, other))
    # A 30 us model on a shared 2-vCPU machine is bimodal (0.030 or 0.040 ms a run, switching within a second),
    # so its median moves with the mix; measured with 20 turns each: at most 7 % apart in 8 repeats (with the
    # six turns of 0.3 s before, up to 27 %). A bias of the turn order (no warm-up, a spinning ORT pool) is more.
    assert first["ci_low_ms"] <= second["ci_high_ms"] and second["ci_low_ms"] <= first["ci_high_ms"] or \
        abs(first["p50_ms"] / second["p50_ms"] - 1) <= SAME_FILE_NOISE, (first, second)
    assert other["p50_ms"] > 1.5 * first["p50_ms"], "the float ONNX file's row should come back third, not int8's"


DEMO_RUN = Path(__file__).resolve().parents[1] / "edgetl-demo" / "run"


@pytest.mark.slow
def test_the_demo_models_recommendation_is_the_same_three_times(monkeypatch):
    """On the demo's real files (CI's setup runs `edgetl demo`): the compress report's candidates, ranked
    with fresh side-by-side timings three times in a row, name the same file each time, the demo's. (The
    thread count may differ between them and from the demo's: whether a second thread pays depends on what
    else the machine runs, which is why it is measured, not assumed. Measured here within one minute, the
    demo's int8 file at 2 threads vs 1: 0.26 vs 0.44 ms, then 0.30-0.34 vs 0.44, either side of the 1.25x a
    second thread must buy.)"""
    import os

    from edgetl.artifacts.run_dir import Run
    from edgetl.runner.bench import BenchOptions, collect
    from edgetl.runner.workers import side_by_side_retimer

    report_path = DEMO_RUN / "compress" / "report.json"
    if not report_path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{report_path} is missing: CI's setup runs `edgetl demo`, which writes it")
        pytest.skip(f"no demo model here ({report_path}); run `edgetl demo` in the repository root first")
    monkeypatch.chdir(DEMO_RUN.parents[1])  # the demo's report names its files relative to where it ran
    report = json.loads(report_path.read_text())
    shipped = report["recommendations"]["x86-cpu"]
    assert shipped["artifact"], "the demo recommends a file"
    passing = [a for a in report["artifacts"] if not a["skipped"] and a["gate"]["passed"]
               and not a["target_checks"]["x86-cpu"]]
    options = BenchOptions(threads=(1, 2), min_seconds=0.5)
    entries = collect(list(dict.fromkeys(str(Path(a["path"]).parent) for a in passing)), options)
    retime = side_by_side_retimer(entries, Run.open(DEMO_RUN).splits[1].paths[0], options)
    again = [recommend(report["artifacts"], [X86], retime)["x86-cpu"] for _ in range(3)]
    chosen = {r["artifact"] for r in again}
    assert chosen == {shipped["artifact"]}, [(r["artifact"], r["threads"], r["considered"]) for r in again]
