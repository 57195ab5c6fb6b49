"""The HTML report's plot: accuracy against p50 latency as inline SVG (no scripts, no external assets).

Marker area follows file size, the Pareto front is joined, shipped files are ringed, and labels are
placed where they cover the least of the markers and earlier labels. Standard library only.
"""

from __future__ import annotations

import math
from typing import Any

from edgetl.runner.report_facts import (FAIL_COLOUR, OTHER_COLOUR, PARETO_COLOUR, REFERENCE_COLOUR, SHIP_COLOUR,
                                        SVG_LINE, esc, joined, kb_text, ms_text, plot_threads, shipped_for)


def _nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    raw_step = ((high - low) or abs(high) or 1.0) / count
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 10) for i in range(first, max(last, first + 1) + 1)]


def svg_plot(report: dict[str, Any], points: list[dict[str, Any]], front: set[str]) -> str:
    width, height, left, right, top, bottom = 1060, 480, 64, 170, 16, 52
    plot_w, plot_h = width - left - right, height - top - bottom
    reference = report.get("reference") or {}
    reference_pct = None if reference.get("accuracy") is None else 100 * reference["accuracy"]
    max_drop = ((report.get("settings") or {}).get("gate") or {}).get("max_accuracy_drop")
    floor_pct = None if reference_pct is None or max_drop is None else reference_pct - max_drop
    accuracies = [p["accuracy"] for p in points] + [v for v in (reference_pct, floor_pct) if v is not None]
    y_pad = max(0.5, 0.08 * (max(accuracies) - min(accuracies)))
    x_ticks = _nice_ticks(0.0, max(p["latency_ms"] for p in points) * 1.08)
    y_top = max(accuracies) + y_pad if max(accuracies) > 100 else min(100.0, max(accuracies) + y_pad)
    y_ticks = _nice_ticks(min(accuracies) - y_pad, y_top)

    def x_of(ms: float) -> float:
        return left + plot_w * (ms - x_ticks[0]) / (x_ticks[-1] - x_ticks[0])

    def y_of(pct: float) -> float:
        return top + plot_h * (1 - (pct - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]))

    threads = plot_threads(report)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="accuracy against p50 latency" '
             'font-family="system-ui, sans-serif" font-size="12">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfbfc" stroke="#ced4da"/>']
    for tick in x_ticks:
        parts.append(SVG_LINE.format(x_of(tick), top, x_of(tick), top + plot_h, "#e9ecef", "")
                     + f'<text x="{x_of(tick):.1f}" y="{top + plot_h + 17}" text-anchor="middle">{tick:g}</text>')
    for tick in y_ticks:
        parts.append(SVG_LINE.format(left, y_of(tick), left + plot_w, y_of(tick), "#e9ecef", "")
                     + f'<text x="{left - 8}" y="{y_of(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle" font-size="13">p50 latency, '
                 f'batch 1, {threads} thread{"s" if threads != 1 else ""} (ms): further left is faster</text>'
                 f'<text transform="translate(18 {top + plot_h / 2}) rotate(-90)" text-anchor="middle" font-size="13">'
                 'top-1 accuracy (%): higher is better</text>')

    # Horizontal lines, labelled in the right margin (the gate floor's label moves down if the two would touch).
    reference_label = f"{str(reference.get('name') or 'float reference')[:18]} {reference_pct or 0:.1f}%"
    label_y = -100.0
    for value, colour, dash, label in ((reference_pct, REFERENCE_COLOUR, "7 5", reference_label),
                                       (floor_pct, FAIL_COLOUR, "2 4", f"gate floor {floor_pct or 0:.1f}%")):
        if value is not None:
            label_y = max(y_of(value) + 4, label_y + 14)
            parts.append(SVG_LINE.format(left, y_of(value), left + plot_w, y_of(value), colour,
                                         f' stroke-width="1.5" stroke-dasharray="{dash}"')
                         + f'<text x="{left + plot_w + 6}" y="{label_y:.1f}" fill="{colour}">{esc(label)}</text>')

    front_points = sorted((p for p in points if p["name"] in front), key=lambda p: (p["latency_ms"], -p["accuracy"]))
    if len(front_points) > 1:
        line = " ".join(f"{x_of(p['latency_ms']):.1f},{y_of(p['accuracy']):.1f}" for p in front_points)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{PARETO_COLOUR}" stroke-width="2" '
                     'stroke-opacity="0.7"/>')

    shipped, largest = shipped_for(report), max(p["bytes"] for p in points) or 1
    placed = [(p, x_of(p["latency_ms"]), y_of(p["accuracy"]), max(3.0, 24 * math.sqrt(p["bytes"] / largest)))
              for p in sorted(points, key=lambda p: -p["bytes"])]  # marker area ∝ size; big ones drawn first
    occupied = [(x - r, y - r, x + r, y + r) for _, x, y, r in placed]  # labels avoid markers and earlier labels
    markers, labels = [], []
    for point, x, y, radius in placed:
        name, failed = point["name"], point["failed"]
        colour = PARETO_COLOUR if name in front else OTHER_COLOUR
        tooltip = f"{name}: {ms_text(point['latency_ms'])} ms, {point['accuracy']:.2f}%, {kb_text(point['bytes'])}"
        if name in shipped:
            markers.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius + 6:.1f}" fill="none" '
                           f'stroke="{SHIP_COLOUR}" stroke-width="3"/>')
        markers.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="{colour}" fill-opacity="0.45" '
                       f'stroke="{FAIL_COLOUR if failed else colour}" stroke-width="2" '
                       f'stroke-dasharray="{"4 3" if failed else "none"}"><title>{esc(tooltip)}</title></circle>')
        title = name + (f"  ★ ship for {', '.join(shipped[name])}" if name in shipped else "")
        subtitle = joined([kb_text(point["bytes"]), f"{ms_text(point['latency_ms'])} ms", failed and "gate failed"])
        labels.append(_point_label(x, y, radius + (6 if name in shipped else 0), title, subtitle,
                                   SHIP_COLOUR if name in shipped else FAIL_COLOUR if failed else "#212529",
                                   left + plot_w, occupied))
    return "\n".join(parts + markers + labels + ["</svg>"])


def _point_label(x: float, y: float, radius: float, title: str, subtitle: str, colour: str, right_edge: float,
                 occupied: list[tuple[float, float, float, float]]) -> str:
    """A two-line label beside a marker, at the place nearest to it (right, nudged up or down, then left) that
    covers the least of the occupied boxes; the label's own box is then occupied too."""
    width, height = max(7.8 * len(title), 6.4 * len(subtitle)), 28.0
    sides = ["right", "left"] if x + radius + 6 + width <= right_edge else ["left", "right"]

    def covered_area(side: str, top: float) -> float:
        left = x + radius + 6 if side == "right" else x - radius - 6 - width
        return sum(max(0.0, min(left + width, x1) - max(left, x0)) * max(0.0, min(top + height, y1) - max(top, y0))
                   for x0, y0, x1, y1 in occupied)

    candidates = [(side, y - 14 + offset) for side in sides for offset in (0, 16, -16, 32, -32, 48, -48, 64, -64)]
    side, top = min(candidates, key=lambda candidate: covered_area(*candidate))  # min() keeps the first of ties
    left = x + radius + 6 if side == "right" else x - radius - 6 - width
    occupied.append((left, top, left + width, top + height))
    text_x, anchor = (left, "start") if side == "right" else (left + width, "end")
    leader = ""  # a thin line back to the marker when the label had to move
    if top != y - 14:
        edge_x = x + radius if side == "right" else x - radius
        leader = SVG_LINE.format(edge_x, y, text_x, top + 14, "#adb5bd", "")
    return (f'{leader}<text x="{text_x:.1f}" y="{top + 11:.1f}" text-anchor="{anchor}" fill="{colour}" '
            f'font-weight="700" font-size="13">{esc(title)}</text><text x="{text_x:.1f}" y="{top + 25:.1f}" '
            f'text-anchor="{anchor}" fill="#6c757d" font-size="11">{esc(subtitle)}</text>')
