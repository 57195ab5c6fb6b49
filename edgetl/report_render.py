"""Render an `edgetl bench` report (the report.json dict) for people: Markdown, and one self-contained HTML page.

The HTML page has no scripts and no external assets (its Content-Security-Policy forbids both): a banner
saying which file to ship, an inline SVG plot of accuracy against latency (edgetl/report_plot.py), and the
same tables as the Markdown. Standard library only; nothing runs at import time.
"""

from __future__ import annotations

import html
import re
from typing import Any

PARETO_COLOUR = "#d9480f"
OTHER_COLOUR = "#6b7f99"
SHIP_COLOUR = "#1a7f37"
NOTHING_TO_SHIP_COLOUR = "#b35c00"
FAIL_COLOUR = "#c92a2a"
REFERENCE_COLOUR = "#495057"
NO_RECOMMENDATION = '<div class="banner none"><div class="ship">No recommendation in this report</div></div>'
SVG_LINE = '<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="{}"{}/>'


def pareto_front(points: list[dict[str, Any]]) -> list[str]:
    """Names of the points no other point dominates, in input order.

    Each point has name, latency_ms, accuracy and bytes. A dominates B when A is no worse on all three
    (latency and bytes lower or equal, accuracy higher or equal) and strictly better on at least one;
    identical points therefore do not dominate each other and are all on the front.
    """
    def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
        no_worse = a["latency_ms"] <= b["latency_ms"] and a["accuracy"] >= b["accuracy"] and a["bytes"] <= b["bytes"]
        better = a["latency_ms"] < b["latency_ms"] or a["accuracy"] > b["accuracy"] or a["bytes"] < b["bytes"]
        return no_worse and better

    return [p["name"] for p in points if not any(dominates(other, p) for other in points if other is not p)]


# ------------------------------------------------------------------------- facts shared by both renders

def _ms_text(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _percent_text(fraction: float | None) -> str:
    return "—" if fraction is None else f"{100 * fraction:.1f}%"


def _kb_text(size_bytes: int | None) -> str:
    if size_bytes is None:
        return "—"
    return f"{size_bytes / 1000:,.0f} KB" if size_bytes >= 10_000 else f"{size_bytes / 1000:.1f} KB"


def _measured(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in report.get("artifacts") or [] if not a.get("skipped")]


def _thread_counts(report: dict[str, Any]) -> list[int]:
    threads = (report.get("settings") or {}).get("threads")
    measured = {row["threads"] for artifact in _measured(report) for row in artifact.get("latency") or []}
    return list(threads) if threads else sorted(measured)


def _plot_threads(report: dict[str, Any]) -> int:
    """The plot shows latency at 1 thread, or at the fewest threads measured when 1 was not."""
    threads = _thread_counts(report)
    return 1 if 1 in threads or not threads else min(threads)


def _latency_at(artifact: dict[str, Any], threads: int) -> dict[str, Any] | None:
    for row in artifact.get("latency") or []:
        if row.get("threads") == threads and row.get("batch", 1) == 1 and row.get("p50_ms") is not None:
            return row
    return None


def _delta_pts(report: dict[str, Any], artifact: dict[str, Any]) -> float | None:
    """Accuracy minus the float reference's, in percentage points."""
    parity = artifact.get("parity") or {}
    reference = (report.get("reference") or {}).get("accuracy")
    if parity.get("accuracy_delta_pts") is not None:
        return parity["accuracy_delta_pts"]
    return None if parity.get("accuracy") is None or reference is None else 100 * (parity["accuracy"] - reference)


def _gate_text(artifact: dict[str, Any]) -> str:
    gate = artifact.get("gate") or {}
    if gate.get("passed") is None:
        return "not checked"
    return "pass" if gate["passed"] else "FAIL: " + ("; ".join(gate.get("reasons") or []) or "no reason given")


def _recommendations(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per target: the artifact to ship (None when there is none), a one-line explanation, and the file's path."""
    by_name = {a.get("name"): a for a in report.get("artifacts") or []}
    result = []
    for target, recommendation in (report.get("recommendations") or {}).items():
        recommendation = recommendation or {}
        name, facts = recommendation.get("artifact"), [recommendation.get("reason") or "no reason given"]
        if name and recommendation.get("p50_ms") is not None:
            threads = recommendation.get("threads")
            at = f" at {threads} thread{'s' if threads != 1 else ''}" if threads else ""
            facts.append(f"p50 {_ms_text(recommendation['p50_ms'])} ms{at}")
        if name and name in by_name:
            artifact = by_name[name]
            delta = _delta_pts(report, artifact)
            facts.append(f"accuracy {_percent_text((artifact.get('parity') or {}).get('accuracy'))}"
                         + ("" if delta is None else f" ({delta:+.2f} pts)"))
            facts.append(_kb_text(artifact.get("bytes")))
        result.append({"target": target, "artifact": name, "text": " · ".join(facts),
                       "path": recommendation.get("path") if name else None})
    return result


def _shipped_for(report: dict[str, Any]) -> dict[str, list[str]]:
    """Artifact name -> the targets it is recommended for."""
    shipped: dict[str, list[str]] = {}
    for recommendation in _recommendations(report):
        if recommendation["artifact"]:
            shipped.setdefault(recommendation["artifact"], []).append(recommendation["target"])
    return shipped


def _artifact_table(report: dict[str, Any]) -> tuple[list[str], list[tuple[dict[str, Any], list[str]]]]:
    """The header, and per measured artifact the artifact with its cells as plain text."""
    threads = _thread_counts(report)
    header = ["artifact", "format", "quantize", "size", "accuracy", "Δ acc (pts)", "top-1 agreement"]
    header += [f"p50 / p90 ms @{n} thread{'s' if n != 1 else ''}" for n in threads] + ["gate"]
    rows = []
    for artifact in _measured(report):
        parity, delta = artifact.get("parity") or {}, _delta_pts(report, artifact)
        cells = [str(artifact.get("name")), str(artifact.get("format") or "—"),
                 str(artifact.get("quantize") or "—"), _kb_text(artifact.get("bytes")),
                 _percent_text(parity.get("accuracy")), "—" if delta is None else f"{delta:+.2f}",
                 _percent_text(parity.get("top1_agreement"))]
        latencies = [_latency_at(artifact, n) for n in threads]
        cells += [f"{_ms_text(r['p50_ms'])} / {_ms_text(r.get('p90_ms'))}" if r else "—" for r in latencies]
        rows.append((artifact, cells + [_gate_text(artifact)]))
    return header, rows


def _joined(parts: list[Any], separator: str = " · ") -> str:
    """The parts that are not empty (None, False, ""), joined."""
    return separator.join(str(part) for part in parts if part)


def _summary(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) lines: when, on what machine, with which settings and gate."""
    machine, settings = report.get("machine") or {}, report.get("settings") or {}
    gate, reference = settings.get("gate") or {}, report.get("reference") or {}
    about_machine = _joined([machine.get("cpu") or "unknown CPU", machine.get("cores") and f"{machine['cores']} cores",
                             machine.get("isa_flags") and "ISA " + ", ".join(machine["isa_flags"]),
                             machine.get("python") and f"Python {machine['python']}"]
                            + [f"{name} {version}" for name, version in (machine.get("versions") or {}).items()])
    images = f" ({settings['images']} images)" if settings.get("images") is not None else ""
    about_settings = _joined([
        f"threads {', '.join(str(n) for n in _thread_counts(report)) or '—'}",
        settings.get("warmup") is not None and f"warmup {settings['warmup']}",
        settings.get("min_runs") is not None
        and f"at least {settings['min_runs']} runs and {settings.get('min_seconds', 0)} s each",
        settings.get("throughput_batch") and f"throughput batch {settings['throughput_batch']}",
        settings.get("data") and f"data {settings['data']}{images}"])
    about_gate = _joined([
        gate.get("max_accuracy_drop") is not None and f"accuracy drop ≤ {gate['max_accuracy_drop']} pts vs "
        f"{reference.get('name', 'the reference')} ({_percent_text(reference.get('accuracy'))})",
        gate.get("min_agreement") is not None and f"top-1 agreement ≥ {_percent_text(gate['min_agreement'])}"], ", ")
    return [("Created", str(report.get("created") or "—")), ("Machine", about_machine),
            ("Settings", about_settings), ("Gate", about_gate or "none")]


def _target_problems(report: dict[str, Any]) -> list[str]:
    return [f"{artifact.get('name')} on {target}: {problem}" for artifact in _measured(report)
            for target, problems in (artifact.get("target_checks") or {}).items() for problem in problems or []]


def _skipped(report: dict[str, Any]) -> list[str]:
    return [f"{a.get('name')}: {a['skipped']}" for a in report.get("artifacts") or [] if a.get("skipped")]


def _plot_points(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Points to plot (p50 latency in ms, accuracy in %, bytes), and why the other artifacts are not plotted."""
    threads = _plot_threads(report)
    points, not_plotted = [], []
    for artifact in report.get("artifacts") or []:
        name, accuracy = str(artifact.get("name")), (artifact.get("parity") or {}).get("accuracy")
        latency = _latency_at(artifact, threads)
        if artifact.get("skipped"):
            not_plotted.append(f"{name} (skipped)")
        elif latency is None or accuracy is None:
            not_plotted.append(f"{name} (no {threads}-thread latency or no accuracy)")
        else:
            failed = (artifact.get("gate") or {}).get("passed") is False
            points.append({"name": name, "latency_ms": latency["p50_ms"], "accuracy": 100 * accuracy,
                           "bytes": artifact.get("bytes") or 0, "failed": failed})
    return points, not_plotted


def _front(report: dict[str, Any], points: list[dict[str, Any]]) -> list[str]:
    """The report's own Pareto front when it has one, else the front of the plotted points."""
    return list(report["pareto"]) if isinstance(report.get("pareto"), list) else pareto_front(points)


def _front_note(report: dict[str, Any]) -> str:
    threads = _plot_threads(report)
    return f"(not dominated on p50 latency at {threads} thread{'s' if threads != 1 else ''}, accuracy and file size)"


# -------------------------------------------------------------------------------------------------- Markdown

def _md(text: Any) -> str:
    """Text shown literally in Markdown, on one line: backslash escapes for table pipes, code and emphasis marks,
    and for `<` and `&` only where they could start HTML or an entity (so `0.96 < 0.98` stays readable)."""
    return re.sub(r"([\\`|*]|<(?=[A-Za-z/!?])|&(?=[A-Za-z#]))", r"\\\1", str(text).replace("\n", " "))


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# edgetl bench report", ""]
    for r in _recommendations(report):
        verdict = f"ship {_md(r['artifact'])}" if r["artifact"] else "nothing to ship"
        path = f" ({_md(r['path'])})" if r["path"] else ""
        lines.append(f"- **{_md(r['target'])}: {verdict}**: {_md(r['text'])}{path}")
    if not report.get("recommendations"):
        lines.append("- **No recommendation in this report.**")
    lines += [""] + [f"**{label}:** {_md(text)}  " for label, text in _summary(report)] + ["", "## Artifacts", ""]
    header, rows = _artifact_table(report)
    if rows:
        lines.append("| " + " | ".join(_md(cell) for cell in header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        lines += ["| " + " | ".join(_md(cell) for cell in cells) + " |" for _, cells in rows]
    else:
        lines.append("No artifact was measured.")
    for title, items, when_empty in (("Target check problems", _target_problems(report), "None."),
                                     ("Skipped", _skipped(report), "None.")):
        lines += ["", f"## {title}", ""] + ([f"- {_md(item)}" for item in items] or [when_empty])
    front = _front(report, _plot_points(report)[0])
    lines += ["", "## Pareto front", "", 
              f"{', '.join(f'**{_md(n)}**' for n in front) or 'empty'} {_front_note(report)}"]
    return "\n".join(lines) + "\n" + _task_parity_markdown(report)


def _task_parity_markdown(report: dict[str, Any]) -> str:
    """A per-task parity table for report.md ("" when no artifact is multi-task)."""
    rows = []
    reference = (report.get("reference") or {}).get("tasks") or {}
    for task, numbers in reference.items():
        rows.append(f"| keras-float32 (reference) | {task} | {numbers['accuracy']:.4f} | — | — |")
    for artifact in report.get("artifacts", []):
        for task, numbers in ((artifact.get("parity") or {}).get("tasks") or {}).items():
            delta, agree = numbers["accuracy_delta_pts"], numbers["top1_agreement"]
            rows.append(f"| {artifact['name']} | {task} | {numbers['accuracy']:.4f} | "
                        f"{'—' if delta is None else f'{delta:+.2f}'} | {'—' if agree is None else f'{agree:.4f}'} |")
    if not rows:
        return ""
    return "\n".join(["", "## Parity per task", "", "| artifact | task | accuracy | Δ pts | top-1 agreement |",
                      "|---|---|---|---|---|", *rows]) + "\n"


# -------------------------------------------------------------------------------------------------------- HTML

def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


STYLE = f"""
body {{ font-family: system-ui, sans-serif; margin: 0; color: #212529; background: #fff; }}
main {{ max-width: 1100px; margin: 0 auto; padding: 0 20px 40px; }}
.banner {{ padding: 12px 20px; color: #fff; background: {SHIP_COLOUR}; border-bottom: 2px solid #fff; }}
.banner.none {{ background: {NOTHING_TO_SHIP_COLOUR}; }} .banner.none .ship {{ font-size: 20px; }}
.banner .ship {{ font-size: 26px; font-weight: 700; }} .banner .why {{ font-size: 15px; }}
.banner code {{ background: rgba(255,255,255,.2); padding: 0 8px; border-radius: 4px; }}
.banner .path {{ font: 13px monospace; opacity: .85; }}
h1 {{ font-size: 20px; margin: 16px 0 4px; }} h2 {{ font-size: 17px; margin: 24px 0 8px; }}
.meta {{ font-size: 13px; color: #495057; margin: 2px 0; }}
table {{ border-collapse: collapse; font-size: 13px; width: 100%; }}
th, td {{ border-bottom: 1px solid #dee2e6; padding: 5px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f1f3f5; }} td.num {{ text-align: right; white-space: nowrap; }}
tr.shipped td {{ background: #e6f4ea; }}
.badge {{ color: #fff; background: {SHIP_COLOUR}; border-radius: 3px; padding: 0 5px; font-size: 11px; }}
.pass {{ color: {SHIP_COLOUR}; font-weight: 600; }} .fail {{ color: {FAIL_COLOUR}; font-weight: 600; }}
.legend span {{ margin-right: 16px; font-size: 13px; white-space: nowrap; }}
.legend i {{ display: inline-block; width: 12px; height: 12px; border-radius: 50%; margin-right: 5px; }}
"""


def _html_banner(report: dict[str, Any]) -> str:
    """One coloured block per target, first thing on the page: green 'ship X', or amber 'nothing to ship'."""
    rows = []
    for r in _recommendations(report):
        verdict = f"ship <code>{_esc(r['artifact'])}</code>" if r["artifact"] else "nothing to ship"
        path = f'<div class="path">{_esc(r["path"])}</div>' if r["path"] else ""
        rows.append(f'<div class="banner{"" if r["artifact"] else " none"}"><div class="ship">{_esc(r["target"])}: '
                    f'{verdict}</div><div class="why">{_esc(r["text"])}</div>{path}</div>')
    return f'<header>{"".join(rows) or NO_RECOMMENDATION}</header>'


def _html_table(report: dict[str, Any]) -> str:
    header, rows = _artifact_table(report)
    if not rows:
        return "<p>No artifact was measured.</p>"
    shipped = _shipped_for(report)
    out = ["<table>", "<tr>" + "".join(f"<th>{_esc(cell)}</th>" for cell in header) + "</tr>"]
    for artifact, cells in rows:
        name = str(artifact.get("name"))
        badges = "".join(f' <span class="badge">ship: {_esc(t)}</span>' for t in shipped.get(name, []))
        middle = "".join(f'<td{" class=num" if i >= 3 else ""}>{_esc(c)}</td>' for i, c in enumerate(cells[1:-1], 1))
        gate_class = "pass" if cells[-1] == "pass" else "fail" if cells[-1].startswith("FAIL") else ""
        out.append(f'<tr class="{"shipped" if name in shipped else ""}"><td><b>{_esc(name)}</b>{badges}</td>{middle}'
                   f'<td class="{gate_class}">{_esc(cells[-1])}</td></tr>')
    return "\n".join(out + ["</table>"])


def _html_list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{_esc(item)}</li>" for item in items) + "</ul>" if items else "<p>None.</p>"


def render_html(report: dict[str, Any]) -> str:
    from edgetl.report_plot import svg_plot  # it imports this module's helpers

    points, not_plotted = _plot_points(report)
    front = _front(report, points)
    first = _recommendations(report)[:1]
    title = f"ship {first[0]['artifact']}" if first and first[0]["artifact"] else "nothing to ship"
    figure = (svg_plot(report, points, set(front)) if points else
              f"<p>Nothing to plot: no artifact has a {_plot_threads(report)}-thread latency and an accuracy.</p>")
    legend = "".join(f'<span><i style="{style}"></i>{_esc(text)}</span>' for style, text in (
        (f"background:{PARETO_COLOUR}", "Pareto front (joined by latency)"),
        (f"background:{OTHER_COLOUR}", "dominated"),
        (f"border:3px solid {SHIP_COLOUR};width:8px;height:8px", "recommended (★ ship)"),
        (f"border:2px dashed {FAIL_COLOUR};width:9px;height:9px", "gate failed"),
        (f"border-top:2px dashed {REFERENCE_COLOUR};border-radius:0;height:0;width:22px", "float reference"),
        (f"border-top:2px dotted {FAIL_COLOUR};border-radius:0;height:0;width:22px", "gate accuracy floor"),
        ("display:none", "marker area ∝ file size"),
    ))
    body = [_html_banner(report), "<main>", "<h1>edgetl bench report</h1>"]
    body += [f'<p class="meta"><b>{_esc(label)}:</b> {_esc(text)}</p>' for label, text in _summary(report)]
    body += ["<h2>Accuracy against latency</h2>", figure, f'<p class="legend">{legend}</p>' if points else ""]
    body += [f'<p class="meta">Not plotted: {_esc(", ".join(not_plotted))}</p>' if not_plotted else ""]
    body += ["<h2>Artifacts</h2>", _html_table(report),
             "<h2>Target check problems</h2>", _html_list(_target_problems(report)),
             "<h2>Skipped</h2>", _html_list(_skipped(report)),
             "<h2>Pareto front</h2>", f"<p>{_esc(', '.join(front) or 'empty')} {_esc(_front_note(report))}</p>",
             "</main>"]
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
            f"<title>edgetl bench: {_esc(title)}</title>\n<style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body></html>\n")
