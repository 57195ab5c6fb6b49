"""Render an `edgetl bench` report (the report.json dict) for people: Markdown, and one self-contained HTML page.

The HTML page has no scripts and no external assets (its Content-Security-Policy forbids both): a banner
saying which file to ship, an inline SVG plot of accuracy against latency (edgetl/runner/report_plot.py), and the
same tables as the Markdown. Standard library only; nothing runs at import time.
"""

from __future__ import annotations

import re
from typing import Any

from edgetl.runner.report_facts import (FAIL_COLOUR, NOTHING_TO_SHIP_COLOUR, OTHER_COLOUR, PARETO_COLOUR, REFERENCE_COLOUR,
                                        SHIP_COLOUR, artifact_table, esc, joined, latency_at, measured, percent_text,
                                        plot_threads, recommendations, shipped_for, thread_counts, tflm_memory)
from edgetl.runner.report_plot import svg_plot

NO_RECOMMENDATION = '<div class="banner none"><div class="ship">No recommendation in this report</div></div>'


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


def _summary(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) lines: when, on what machine, with which settings and gate."""
    machine, settings = report.get("machine") or {}, report.get("settings") or {}
    gate, reference = settings.get("gate") or {}, report.get("reference") or {}
    about_machine = joined([machine.get("cpu") or "unknown CPU", machine.get("cores") and f"{machine['cores']} cores",
                             machine.get("isa_flags") and "ISA " + ", ".join(machine["isa_flags"]),
                             machine.get("python") and f"Python {machine['python']}"]
                            + [f"{name} {version}" for name, version in (machine.get("versions") or {}).items()])
    images = f" ({settings['images']} images)" if settings.get("images") is not None else ""
    about_settings = joined([
        f"threads {', '.join(str(n) for n in thread_counts(report)) or '—'}",
        settings.get("warmup") is not None and f"warmup {settings['warmup']}",
        settings.get("min_runs") is not None
        and f"at least {settings['min_runs']} runs and {settings.get('min_seconds', 0)} s each",
        settings.get("throughput_batch") and f"throughput batch {settings['throughput_batch']}",
        settings.get("data") and f"data {settings['data']}{images}"])
    about_gate = joined([
        gate.get("max_accuracy_drop") is not None and f"accuracy drop ≤ {gate['max_accuracy_drop']} pts vs "
        f"{reference.get('name', 'the reference')} ({percent_text(reference.get('accuracy'))})",
        gate.get("min_agreement") is not None and f"top-1 agreement ≥ {percent_text(gate['min_agreement'])}"], ", ")
    lines = [("Created", str(report.get("created") or "—")), ("Machine", about_machine),
             ("Settings", about_settings), ("Gate", about_gate or "none")]
    skipped = settings.get("skipped") or []
    if skipped:
        shown = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        lines.append(("Skipped images", f"{len(skipped)}: {shown}" + (" …" if len(skipped) > 5 else "")))
    return lines


def _target_problems(report: dict[str, Any]) -> list[str]:
    return [f"{artifact.get('name')} on {target}: {problem}" for artifact in measured(report)
            for target, problems in (artifact.get("target_checks") or {}).items() for problem in problems or []]


def _skipped(report: dict[str, Any]) -> list[str]:
    return [f"{a.get('name')}: {a['skipped']}" for a in report.get("artifacts") or [] if a.get("skipped")]


def _plot_points(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Points to plot (p50 latency in ms, accuracy in %, bytes), and why the other artifacts are not plotted."""
    threads = plot_threads(report)
    points, not_plotted = [], []
    for artifact in report.get("artifacts") or []:
        name, accuracy = str(artifact.get("name")), (artifact.get("parity") or {}).get("accuracy")
        latency = latency_at(artifact, threads)
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
    threads = plot_threads(report)
    return f"(not dominated on p50 latency at {threads} thread{'s' if threads != 1 else ''}, accuracy and file size)"


# -------------------------------------------------------------------------------------------------- Markdown

def _md(text: Any) -> str:
    """Text shown literally in Markdown, on one line: backslash escapes for table pipes, code and emphasis marks,
    and for `<` and `&` only where they could start HTML or an entity (so `0.96 < 0.98` stays readable)."""
    return re.sub(r"([\\`|*]|<(?=[A-Za-z/!?])|&(?=[A-Za-z#]))", r"\\\1", str(text).replace("\n", " "))


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# edgetl bench report", ""]
    for r in recommendations(report):
        verdict = f"ship {_md(r['artifact'])}" if r["artifact"] else "nothing to ship"
        path = f" ({_md(r['path'])})" if r["path"] else ""
        lines.append(f"- **{_md(r['target'])}: {verdict}**: {_md(r['text'])}{path}")
    if not report.get("recommendations"):
        lines.append("- **No recommendation in this report.**")
    lines += [""] + [f"**{label}:** {_md(text)}  " for label, text in _summary(report)] + ["", "## Artifacts", ""]
    header, rows = artifact_table(report)
    if rows:
        lines.append("| " + " | ".join(_md(cell) for cell in header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        lines += ["| " + " | ".join(_md(cell) for cell in cells) + " |" for _, cells in rows]
    else:
        lines.append("No artifact was measured.")
    for title, items, when_empty in (("Target check problems", _target_problems(report), "None."),
                                     ("Skipped", _skipped(report), "None.")):
        lines += ["", f"## {title}", ""] + ([f"- {_md(item)}" for item in items] or [when_empty])
    if tflm_memory(report):
        lines += ["", "## Microcontroller memory (TensorFlow Lite Micro)", ""]
        lines += [f"- {_md(item)}" for item in tflm_memory(report)]
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
    for r in recommendations(report):
        verdict = f"ship <code>{esc(r['artifact'])}</code>" if r["artifact"] else "nothing to ship"
        path = f'<div class="path">{esc(r["path"])}</div>' if r["path"] else ""
        rows.append(f'<div class="banner{"" if r["artifact"] else " none"}"><div class="ship">{esc(r["target"])}: '
                    f'{verdict}</div><div class="why">{esc(r["text"])}</div>{path}</div>')
    return f'<header>{"".join(rows) or NO_RECOMMENDATION}</header>'


def _html_table(report: dict[str, Any]) -> str:
    header, rows = artifact_table(report)
    if not rows:
        return "<p>No artifact was measured.</p>"
    shipped = shipped_for(report)
    out = ["<table>", "<tr>" + "".join(f"<th>{esc(cell)}</th>" for cell in header) + "</tr>"]
    for artifact, cells in rows:
        name = str(artifact.get("name"))
        badges = "".join(f' <span class="badge">ship: {esc(t)}</span>' for t in shipped.get(name, []))
        middle = "".join(f'<td{" class=num" if i >= 3 else ""}>{esc(c)}</td>' for i, c in enumerate(cells[1:-1], 1))
        gate_class = "pass" if cells[-1] == "pass" else "fail" if cells[-1].startswith("FAIL") else ""
        out.append(f'<tr class="{"shipped" if name in shipped else ""}"><td><b>{esc(name)}</b>{badges}</td>{middle}'
                   f'<td class="{gate_class}">{esc(cells[-1])}</td></tr>')
    return "\n".join(out + ["</table>"])


def _html_list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>" if items else "<p>None.</p>"


def render_html(report: dict[str, Any]) -> str:
    points, not_plotted = _plot_points(report)
    front = _front(report, points)
    first = recommendations(report)[:1]
    title = f"ship {first[0]['artifact']}" if first and first[0]["artifact"] else "nothing to ship"
    figure = (svg_plot(report, points, set(front)) if points else
              f"<p>Nothing to plot: no artifact has a {plot_threads(report)}-thread latency and an accuracy.</p>")
    legend = "".join(f'<span><i style="{style}"></i>{esc(text)}</span>' for style, text in (
        (f"background:{PARETO_COLOUR}", "Pareto front (joined by latency)"),
        (f"background:{OTHER_COLOUR}", "dominated"),
        (f"border:3px solid {SHIP_COLOUR};width:8px;height:8px", "recommended (★ ship)"),
        (f"border:2px dashed {FAIL_COLOUR};width:9px;height:9px", "gate failed"),
        (f"border-top:2px dashed {REFERENCE_COLOUR};border-radius:0;height:0;width:22px", "float reference"),
        (f"border-top:2px dotted {FAIL_COLOUR};border-radius:0;height:0;width:22px", "gate accuracy floor"),
        ("display:none", "marker area ∝ file size"),
    ))
    body = [_html_banner(report), "<main>", "<h1>edgetl bench report</h1>"]
    body += [f'<p class="meta"><b>{esc(label)}:</b> {esc(text)}</p>' for label, text in _summary(report)]
    body += ["<h2>Accuracy against latency</h2>", figure, f'<p class="legend">{legend}</p>' if points else ""]
    body += [f'<p class="meta">Not plotted: {esc(", ".join(not_plotted))}</p>' if not_plotted else ""]
    body += ["<h2>Artifacts</h2>", _html_table(report),
             "<h2>Target check problems</h2>", _html_list(_target_problems(report)),
             "<h2>Skipped</h2>", _html_list(_skipped(report)),
             *(["<h2>Microcontroller memory (TensorFlow Lite Micro)</h2>", _html_list(tflm_memory(report))]
               if tflm_memory(report) else []),
             "<h2>Pareto front</h2>", f"<p>{esc(', '.join(front) or 'empty')} {esc(_front_note(report))}</p>",
             "</main>"]
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
            f"<title>edgetl bench: {esc(title)}</title>\n<style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body></html>\n")
