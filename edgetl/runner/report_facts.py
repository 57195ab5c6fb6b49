"""Facts both renders of a bench report show (edgetl/runner/report_render.py: Markdown and HTML;
edgetl/runner/report_plot.py: the HTML page's plot): colours, number formats, which artifact ships for
which target, and each artifact's table cells. Standard library only."""

from __future__ import annotations

import html
from typing import Any

PARETO_COLOUR = "#d9480f"
OTHER_COLOUR = "#6b7f99"
SHIP_COLOUR = "#1a7f37"
NOTHING_TO_SHIP_COLOUR = "#b35c00"
FAIL_COLOUR = "#c92a2a"
REFERENCE_COLOUR = "#495057"
SVG_LINE = '<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="{}"{}/>'


def ms_text(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def percent_text(fraction: float | None) -> str:
    return "—" if fraction is None else f"{100 * fraction:.1f}%"


def kb_text(size_bytes: int | None) -> str:
    if size_bytes is None:
        return "—"
    return f"{size_bytes / 1000:,.0f} KB" if size_bytes >= 10_000 else f"{size_bytes / 1000:.1f} KB"


def measured(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in report.get("artifacts") or [] if not a.get("skipped")]


def thread_counts(report: dict[str, Any]) -> list[int]:
    threads = (report.get("settings") or {}).get("threads")
    seen = {row["threads"] for artifact in measured(report) for row in artifact.get("latency") or []}
    return list(threads) if threads else sorted(seen)


def plot_threads(report: dict[str, Any]) -> int:
    """The plot shows latency at 1 thread, or at the fewest threads measured when 1 was not."""
    threads = thread_counts(report)
    return 1 if 1 in threads or not threads else min(threads)


def latency_at(artifact: dict[str, Any], threads: int) -> dict[str, Any] | None:
    for row in artifact.get("latency") or []:
        if row.get("threads") == threads and row.get("batch", 1) == 1 and row.get("p50_ms") is not None:
            return row
    return None


def delta_pts(report: dict[str, Any], artifact: dict[str, Any]) -> float | None:
    """Accuracy minus the float reference's, in percentage points."""
    parity = artifact.get("parity") or {}
    reference = (report.get("reference") or {}).get("accuracy")
    if parity.get("accuracy_delta_pts") is not None:
        return parity["accuracy_delta_pts"]
    return None if parity.get("accuracy") is None or reference is None else 100 * (parity["accuracy"] - reference)


def gate_text(artifact: dict[str, Any]) -> str:
    gate = artifact.get("gate") or {}
    if gate.get("passed") is None:
        return "not checked"
    return "pass" if gate["passed"] else "FAIL: " + ("; ".join(gate.get("reasons") or []) or "no reason given")


def recommendations(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per target: the artifact to ship (None when there is none), a one-line explanation, and the file's path."""
    by_name = {a.get("name"): a for a in report.get("artifacts") or []}
    result = []
    for target, recommendation in (report.get("recommendations") or {}).items():
        recommendation = recommendation or {}
        name, facts = recommendation.get("artifact"), [recommendation.get("reason") or "no reason given"]
        if name and recommendation.get("p50_ms") is not None:
            threads = recommendation.get("threads")
            at = f" at {threads} thread{'s' if threads != 1 else ''}" if threads else ""
            facts.append(f"p50 {ms_text(recommendation['p50_ms'])} ms{at}")
        if name and name in by_name:
            artifact = by_name[name]
            delta = delta_pts(report, artifact)
            facts.append(f"accuracy {percent_text((artifact.get('parity') or {}).get('accuracy'))}"
                         + ("" if delta is None else f" ({delta:+.2f} pts)"))
            facts.append(kb_text(artifact.get("bytes")))
        if name and recommendation.get("thread_advice"):
            facts.append(recommendation["thread_advice"])
        result.append({"target": target, "artifact": name, "text": " · ".join(facts),
                       "path": recommendation.get("path") if name else None})
    return result


def tflm_memory(report: dict[str, Any]) -> list[str]:
    """Per file measured in TensorFlow Lite Micro: its flash bytes, and the tensor arena TFLM needs beside the
    graph's estimate (or why TFLM cannot load it)."""
    lines = []
    for artifact in report.get("artifacts") or []:
        facts = artifact.get("tflm")
        if artifact.get("runtime") != "tflm" or not facts:
            continue
        estimate = (artifact.get("peak_ram_estimate") or {}).get("peak_activation_bytes")
        if facts.get("load_problem"):
            lines.append(f"{artifact['name']}: {facts['load_problem']}")
            continue
        ratio = f", {facts['arena_bytes'] / estimate:.2f}x" if estimate else ""
        lines.append(f"{artifact['name']}: flash {artifact['bytes']:,} bytes (the model); tensor arena "
                     f"{facts['arena_bytes']:,} bytes measured by TFLM (the smallest it allocates in; estimate "
                     f"{estimate:,}{ratio}); latency is TFLM's reference kernels on this host, not the device's")
    return lines


def shipped_for(report: dict[str, Any]) -> dict[str, list[str]]:
    """Artifact name -> the targets it is recommended for."""
    shipped: dict[str, list[str]] = {}
    for recommendation in recommendations(report):
        if recommendation["artifact"]:
            shipped.setdefault(recommendation["artifact"], []).append(recommendation["target"])
    return shipped


def artifact_table(report: dict[str, Any]) -> tuple[list[str], list[tuple[dict[str, Any], list[str]]]]:
    """The header, and per measured artifact the artifact with its cells as plain text."""
    threads = thread_counts(report)
    header = ["artifact", "format", "quantize", "size", "accuracy", "Δ acc (pts)", "top-1 agreement"]
    header += [f"p50 / p90 ms @{n} thread{'s' if n != 1 else ''}" for n in threads] + ["gate"]
    rows = []
    for artifact in measured(report):
        parity, delta = artifact.get("parity") or {}, delta_pts(report, artifact)
        cells = [str(artifact.get("name")), str(artifact.get("format") or "—"),
                 str(artifact.get("quantize") or "—"), kb_text(artifact.get("bytes")),
                 percent_text(parity.get("accuracy")), "—" if delta is None else f"{delta:+.2f}",
                 percent_text(parity.get("top1_agreement"))]
        latencies = [latency_at(artifact, n) for n in threads]
        cells += [f"{ms_text(r['p50_ms'])} / {ms_text(r.get('p90_ms'))}" if r else "—" for r in latencies]
        rows.append((artifact, cells + [gate_text(artifact)]))
    return header, rows


def joined(parts: list[Any], separator: str = " · ") -> str:
    """The parts that are not empty (None, False, ""), joined."""
    return separator.join(str(part) for part in parts if part)


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)
