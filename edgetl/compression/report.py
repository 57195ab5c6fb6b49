"""How `edgetl compress` shows its result: a candidate table, the repair ladder, the recommendation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.runner.report_facts import tflm_memory

SPARSITY_NOTE = ("Pruning and clustering pay in the gzip column (zeros and repeated values compress); "
                 "LiteRT's int8 kernels and ONNX Runtime's CPU provider skip no zeros, so compare their "
                 "latency with the dense file's in the table rather than expect a speed-up.")


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    target = report["compress"]["target"]
    recommended = (report["compress"]["recommended"] or {}).get("name")
    threads = sorted({r["threads"] for e in report["artifacts"] for r in (e["latency"] or [])})
    header = ["artifact", "recipe", "bytes", "gzip", "vs float", "accuracy", "drop (pts)",
              "p50 ms @" + "/".join(f"{n}T" for n in threads), "verdict"]
    recipes = {c["name"]: c["recipe"] for c in report["compress"]["candidates"]}
    rows = []
    for entry in report["artifacts"]:
        if entry["skipped"]:
            rows.append([entry["name"], recipes.get(entry["name"], ""), f"{entry['bytes']:,}", "", "", "", "", "",
                         f"skipped: {entry['skipped']}"])
            continue
        p50 = {r["threads"]: r["p50_ms"] for r in entry["latency"]}
        problems = entry["gate"]["reasons"] + list(entry["target_checks"].get(target, []))
        verdict = "RECOMMENDED" if entry["name"] == recommended else ("ok" if not problems else _short(problems[0]))
        ratio = entry.get("bytes_vs_float")
        recipe = recipes.get(entry["name"].split("@")[0], "")  # a GPU provider's or TFLM's row: its file's recipe
        rows.append([entry["name"], _short(recipe), f"{entry['bytes']:,}", f"{entry['gzip_bytes']:,}",
                     f"{ratio:.2f}x" if ratio else "", f"{entry['parity']['accuracy']:.4f}",
                     f"{-entry['parity']['accuracy_delta_pts'] + 0.0:.2f}",
                     " / ".join(f"{p50[n]:.3f}" if n in p50 else "-" for n in threads), verdict])
    for candidate in report["compress"]["candidates"]:
        if candidate["status"] == "failed":
            rows.append([candidate["name"], _short(candidate["recipe"]), "", "", "", "", "", "",
                         _short(f"failed: {candidate['reason']}")])
    return header, rows


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def render_text(report: dict[str, Any]) -> str:
    header, rows = table_rows(report)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in [header] + rows]
    compress = report["compress"]
    lines += [f"TFLM: {line}" for line in tflm_memory(report)]
    for attempt in compress["repair"]:
        lines.append("repair: " + _attempt_text(attempt))
    best = compress["recommended"]
    if best:
        lines.append(f"recommended for {compress['target']}: {best['name']} ({best['path']}): "
                     f"drop {best['accuracy_drop_pts'] + 0.0:.2f} pts <= {compress['max_accuracy_drop']}, "
                     f"{best['bytes']:,} bytes, p50 {best['p50_ms']:.3f} ms at {best['threads']} thread(s)")
        lines.append(f"  why: {best['reason']}")
        lines.append(f"  {best['thread_advice']}")
    else:
        lines.append(f"no artifact meets the budget of {compress['max_accuracy_drop']} pts on {compress['target']} "
                     "and its checks")
    lines.append(f"report: {report['report_dir']}/report.md")
    return "\n".join(lines)


def _attempt_text(attempt: dict[str, Any]) -> str:
    if attempt.get("skipped"):
        return f"{attempt['attempt']}: skipped ({attempt['skipped']})"
    outcome = "passes" if attempt["passed"] else "misses (" + "; ".join(attempt["reasons"]) + ")"
    drop = f", drop {attempt['accuracy_drop_pts']:.2f} pts" if "accuracy_drop_pts" in attempt else ""
    layers = (f", float layers {_short(', '.join(attempt['float_layers']), 120)}" if attempt.get("float_layers")
              else "")
    return f"{attempt['attempt']} [{attempt['name']}]{drop}{layers}: {outcome}"


def append_markdown(report: dict[str, Any], path: Path) -> None:
    from edgetl.artifacts.manifest import write_bytes_atomic

    header, rows = table_rows(report)
    compress = report["compress"]
    lines = ["", "## Compression", "", f"Target **{compress['target']}**, accuracy budget "
             f"**{compress['max_accuracy_drop']} pts** below the float Keras model.", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    if compress["repair"]:
        lines += ["", "### Repair ladder (int8 missed the budget)", ""]
        lines += [f"{i + 1}. {_attempt_text(a)}" for i, a in enumerate(compress["repair"])]
    if compress["sensitivity"]:
        lines += ["", "Most int8-sensitive tensors (median channel noise-to-signal): "
                  + ", ".join(f"{r['layer']} {r['score']:.3f}" for r in compress["sensitivity"][:5])]
    lines += ["", SPARSITY_NOTE, ""]
    write_bytes_atomic(path, path.read_bytes() + "\n".join(lines).encode())
