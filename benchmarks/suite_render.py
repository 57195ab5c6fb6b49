"""RESULTS.md of the performance suite (benchmarks/suite.py): its tables, from results.json's figures."""

from __future__ import annotations

from typing import Any

from benchmarks.suite import BUDGETS_PTS, GOALS

RUNTIME_SHORT = {"litert": "LiteRT", "onnxruntime": "ORT", "openvino": "OV"}


def render(results: dict[str, Any]) -> str:
    machine, peaks = results["machine"], results["peak_gmacs"]
    lines = ["# Performance suite results", "",
             f"`python -m benchmarks` on {machine['cpu']} ({machine['cores']} cores; "
             f"{', '.join(machine['isa_flags'])}), {results['created']}, {results['seconds'] / 60:.1f} min; versions: "
             + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()) + ".", "",
             "Peak MAC rates, dense [256x1024]x[1024x1024] matmul (GMAC/s, 1 / 2 threads): fp32 LiteRT "
             f"{peaks['1']['fp32_litert']:.0f} / {peaks['2']['fp32_litert']:.0f}; int8 LiteRT "
             f"{peaks['1']['int8_litert']:.0f} / {peaks['2']['int8_litert']:.0f}; int8 ONNX Runtime "
             f"{peaks['1']['int8_ort']:.0f} / {peaks['2']['int8_ort']:.0f}. The int8 floor uses the faster int8 "
             f"peak. `edgetl --help`: {results['help_seconds']:.3f} s (goal < {GOALS['help_seconds']}).", ""]
    lines += _edgetl_table(results) + _budget_table(results) + _tflite_peers_table(results) + _all_rows_table(results)
    lines += _threads_table(results) + render_flow(results)
    return "\n".join(lines)


def _edgetl_table(results: dict[str, Any]) -> list[str]:
    lines = ["## edgetl's files: floors and int8 / fp32", "",
             "| backbone | MACs | threads | LiteRT fp32, int8 | ORT fp32, int8 | OV fp32, int8 | floor fp32, int8 ms | "
             "best fp32 ÷ fp32 floor (≤2.5) | best int8 ÷ int8 floor (≤3) | int8/fp32 LiteRT, ORT, OV (≤0.6) | "
             "int8 drop TFLite, ONNX (pts) | edgetl/plain fp32 (≤1.02) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in results["backbones"].items():
        r, drop = row["ratios"], row["drop_pts"]
        for t in ("1", "2"):
            p = row["p50_ms"][t]
            pairs = [_pair(p, f"onnx-none@{rt}" if rt != "litert" else "tflite-none@litert",
                           f"onnx-int8@{rt}" if rt != "litert" else "tflite-int8@litert")
                     for rt in ("litert", "onnxruntime", "openvino")]
            int8_ratios = ", ".join(_mark(r[k], GOALS["int8_over_fp32"]) if k in r else "–"
                                    for k in (f"int8_over_fp32_{rt}_{t}t" for rt in ("litert", "onnxruntime", "openvino")))
            floor = r[f"floor_ms_{t}t"]
            lines.append(
                f"| {name} | {row['macs'] / 1e6:.0f}M | {t} | {' | '.join(pairs)} | {floor['fp32']:.3f}, "
                f"{floor['int8']:.3f} | {_mark(r[f'floor_fp32_{t}t'], GOALS['floor_fp32'])} | "
                f"{_mark(r[f'floor_int8_{t}t'], GOALS['floor_int8'])} | {int8_ratios} | "
                f"{drop['tflite-int8@litert']:+.2f}, {drop['onnx-int8@onnxruntime']:+.2f} | "
                f"{_mark(r[f'edgetl_over_plain_{t}t'], GOALS['edgetl_over_plain'])} |")
    return lines + ["", "Latencies are p50 ms, batch 1, 224 px. The floor goal applies to MobileNetV2 and "
                        "EfficientNet-Lite0 at 1 thread; drops are points of top-1 on the 400 held-out digits "
                        "against the float TFLite file.", ""]


def _budget_table(results: dict[str, Any]) -> list[str]:
    lines = ["## edgetl against the peers, per accuracy budget", "",
             "The fastest file within the budget (drop ≤ budget points below the float file), edgetl's "
             "(its four files and compress's float-fallback rungs) against the peers' (plain converter int8, "
             "ai-edge-quantizer, ORT quantize_static, NNCF quantize, and the float files a peer's user falls back "
             "to: the plain converter's fp32 TFLite and the float ONNX the peers quantize"
             + (", NNCF accuracy control" if results.get("nncf_ac") else "; NNCF accuracy control only with "
                "--nncf-ac") + "; each in every runtime that runs it).", "",
             "| backbone | threads | budget | edgetl: file, ms, drop | fastest peer: file, ms, drop | edgetl ÷ peer (≤1.0) |",
             "|---|---|---|---|---|---|"]
    for name, row in results["backbones"].items():
        for t in ("1", "2"):
            for budget in BUDGETS_PTS:
                entry = row["ratios"].get(f"budget{budget}_{t}t")
                if entry is None:
                    continue
                cells = [_file_cell(row, t, entry[k]) for k in ("edgetl", "peer")]
                ratio = entry["edgetl_over_peer"]
                lines.append(f"| {name} | {t} | {budget} | {cells[0]} | {cells[1]} | "
                             f"{_mark(ratio, GOALS['edgetl_over_peer']) if ratio is not None else '–'} |")
    if not results.get("nncf_ac"):
        return lines + [""]
    return lines + ["", "NNCF's accuracy control validates on the same 400 held-out images the drops are measured "
                        "on (it needs a validation set, and this is the one there is); the other files never see them.",
                    ""]


def _tflite_peers_table(results: dict[str, Any]) -> list[str]:
    lines = ["## int8 TFLite: edgetl against the plain converter and ai-edge-quantizer (LiteRT)", "",
             "| backbone | threads | edgetl int8 ms, drop | plain int8 ms, drop | ai-edge-quantizer ms, drop | "
             "edgetl ÷ plain, ÷ ai-edge-quantizer |", "|---|---|---|---|---|---|"]
    for name, row in results["backbones"].items():
        if "aeq-int8@litert" not in row["drop_pts"]:
            continue
        r = row["ratios"]
        for t in ("1", "2"):
            cells = [_file_cell(row, t, k) for k in ("tflite-int8@litert", "plain-tflite-int8@litert", "aeq-int8@litert")]
            lines.append(f"| {name} | {t} | {' | '.join(c.split(', ', 1)[1] for c in cells)} | "
                         f"{r[f'edgetl_int8_over_plain-tflite-int8_{t}t']:.2f}, {r[f'edgetl_int8_over_aeq-int8_{t}t']:.2f} |")
    return lines + [""]


def _all_rows_table(results: dict[str, Any]) -> list[str]:
    lines = ["## Every file in every runtime", "", "| backbone | file@runtime | bytes | accuracy | drop (pts) | "
             "1T ms | 2T ms |", "|---|---|---|---|---|---|---|"]
    for name, row in results["backbones"].items():
        for key, acc in row["accuracy"].items():
            file_key = key.split("@")[0]
            lines.append(f"| {name} | {key} | {row['bytes'][file_key]:,} | {acc:.4f} | {row['drop_pts'][key]:+.2f} | "
                         f"{row['p50_ms']['1'][key]:.3f} | {row['p50_ms']['2'][key]:.3f} |")
    return lines + [""]


def _threads_table(results: dict[str, Any]) -> list[str]:
    lines = ["## 2 threads ÷ 1 thread and the harness", "",
             "| backbone | 2T/1T LiteRT fp32, int8 (≤0.7) | 2T/1T ORT fp32, int8 (≤0.7) | 2T/1T OV fp32, int8 | "
             "harness/bare invoke (≤1.03) |", "|---|---|---|---|---|"]
    for name, row in results["backbones"].items():
        r = row["ratios"]
        cells = []
        for fp, q in (("tflite-none@litert", "tflite-int8@litert"), ("onnx-none@onnxruntime", "onnx-int8@onnxruntime"),
                      ("onnx-none@openvino", "onnx-int8@openvino")):
            keys = (f"two_over_one_thread_{fp}", f"two_over_one_thread_{q}")
            cells.append(", ".join(_mark(r[k], GOALS["two_over_one_thread"]) for k in keys) if keys[0] in r else "–")
        lines.append(f"| {name} | {' | '.join(cells)} | {_mark(r['harness_overhead'], GOALS['harness_overhead'])} |")
    return lines + ["", "All files and thread counts of a backbone are timed interleaved in one measurement "
                        "(p25/p75 in results.json). A ratio in **bold** misses its goal.", ""]


def _pair(p50: dict[str, float], fp32: str, int8: str) -> str:
    return f"{p50[fp32]:.3f}, {p50[int8]:.3f}" if fp32 in p50 else "–"


def _file_cell(row: dict[str, Any], threads: str, key: str | None) -> str:
    if key is None:
        return "none within budget"
    return f"{key}, {row['p50_ms'][threads][key]:.3f}, {row['drop_pts'][key]:+.2f}"


def render_flow(results: dict[str, Any]) -> list[str]:
    if "flow" not in results:
        return ["Whole-flow part not run (`--flow` adds it; `python benchmarks/flow.py` runs it alone).", ""]
    flow, transfer = results["flow"], results["transfer"]
    fx = transfer["feature_extraction"]
    base, cached = fx["keras_tutorial"], fx["edgetl_cached"]
    return [
        "| whole flow | measured | goal |", "|---|---|---|",
        f"| `edgetl demo` wall time (fresh process) | {flow['demo_seconds']:.0f} s | "
        f"{_mark_seconds(flow['demo_seconds'], 600)} < 600 s |",
        f"| recommended ({flow['recommended']}) / fastest passing re-timed ({flow['fastest_retimed']}), "
        f"{flow['threads']} threads | {_mark(flow['recommended_over_fastest'], 1.05)} | ≤ 1.05 |",
        f"| frozen-phase training throughput, feature cache / Keras tutorial ({base['images_per_second']:.0f} "
        f"img/s) | {cached['steady_images_per_second']:.0f} img/s = {fx['throughput_ratio']:.1f}x | ≥ 10x |",
        f"| validation accuracy, cached / tutorial | {cached['val_accuracy']:.4f} / {base['val_accuracy']:.4f} "
        f"({-fx['accuracy_gap_pts']:+.2f} pts) | within 1 pt |",  # the gap is tutorial - cached
        f"| end to end incl. one-time extraction ({cached['extract_seconds']:.1f} s), cold cache | "
        f"{fx['end_to_end_ratio_cold_cache']:.1f}x | (reported) |", ""]


def _mark_seconds(value: float, goal: float) -> str:
    return "met" if value < goal else "**missed**"


def _mark(value: float, goal: float) -> str:
    return f"{value:.2f}" if value <= goal else f"**{value:.2f}**"
