"""Compression goals of issue #6, measured side by side in one run on the demo data (MobileNetV2).

    python benchmarks/compression.py [--out DIR] [--run RUN] [--cqat]

Trains the demo model (or reuses --run), then runs `edgetl compress` with one recipe per technique
on a TFLite-only x86 profile, no repair, and an open budget so every candidate is measured. Reports
accuracy drop vs the float Keras model on the 359 validation images, raw and gzip sizes, and the
ratios the issue sets goals for. CQAT (cluster+qat) is opt-in: TFMOT's cluster-preserving QAT graph
takes ~3 minutes to build for MobileNetV2 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PROFILE = """schema_version = 1
name = "x86-tflite"
description = "benchmark profile: x86 LiteRT, TFLite only"
runtime = "litert"
formats = ["tflite"]
quantization = ["int8", "dynamic", "none", "fp16"]
threads = 1
"""

RECIPES = ["float", "int8", "qat", "prune", "prune+int8", "cluster", "cluster+int8", "prune+qat"]  # default options
CQAT = "cluster+qat"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("edgetl-bench-compression"))
    parser.add_argument("--run", type=Path, default=None, help="an existing demo run to reuse")
    parser.add_argument("--cqat", action="store_true", help="also measure cluster+qat (slow graph build)")
    args = parser.parse_args()

    import edgetl
    from edgetl.compression.compressor import CompressOptions, run_compress
    from edgetl.demo import DEMO_OPTIONS, write_digits_folder

    args.out.mkdir(parents=True, exist_ok=True)
    run = args.run
    if run is None:
        write_digits_folder(args.out / "digits")
        run = args.out / "run"
        edgetl.train(str(args.out / "digits"), str(run), **DEMO_OPTIONS)
    profile = args.out / "x86-tflite.toml"
    profile.write_text(PROFILE)
    recipes = RECIPES + ([CQAT] if args.cqat else [])
    started = time.perf_counter()
    report = run_compress(run, CompressOptions(target=str(profile), recipes=tuple(recipes), max_accuracy_drop=100.0,
                                               repair=False, verify_size=128, threads=(1,), min_runs=50))
    seconds = round(time.perf_counter() - started, 1)
    from edgetl.compression.recipe import parse

    asked = {parse(text).spec(): text for text in recipes}  # rows keyed by the recipe as written above
    recipe_of = {c["name"]: asked[c["recipe"]] for c in report["compress"]["candidates"]}
    rows = {}
    for entry in report["artifacts"]:
        rows[recipe_of[entry["name"]]] = {
            "artifact": entry["name"], "bytes": entry["bytes"], "gzip_bytes": entry["gzip_bytes"],
            "accuracy": entry["parity"]["accuracy"], "drop_pts": round(-entry["parity"]["accuracy_delta_pts"], 2),
            "p50_ms_1t": entry["latency"][0]["p50_ms"]}
    dense = rows["float"]
    goals = {
        "int8 PTQ drop <= 0.5 pt": (rows["int8"]["drop_pts"], rows["int8"]["drop_pts"] <= 0.5),
        "QAT drop <= 0.5 pt": (rows["qat"]["drop_pts"], rows["qat"]["drop_pts"] <= 0.5),
        "QAT drop <= PTQ drop": (f"{rows['qat']['drop_pts']} vs {rows['int8']['drop_pts']}",
                                 rows["qat"]["drop_pts"] <= rows["int8"]["drop_pts"]),
        "50% prune gzip <= 0.65x dense": _ratio(rows["prune"]["gzip_bytes"], dense["gzip_bytes"], 0.65),
        "50% prune drop <= 1 pt": (rows["prune"]["drop_pts"], rows["prune"]["drop_pts"] <= 1.0),
        "16-cluster gzip <= 0.4x dense": _ratio(rows["cluster"]["gzip_bytes"], dense["gzip_bytes"], 0.4),
        "16-cluster drop <= 1 pt": (rows["cluster"]["drop_pts"], rows["cluster"]["drop_pts"] <= 1.0),
        "int8 file <= 0.27x fp32 file": _ratio(rows["int8"]["bytes"], dense["bytes"], 0.27),
    }
    result = {"run": str(run), "compress_seconds": seconds, "images": report["settings"]["images"],
              "machine": report["machine"], "rows": rows,
              "goals": {k: {"value": v, "met": bool(ok)} for k, (v, ok) in goals.items()}}
    (args.out / "compression.json").write_text(json.dumps(result, indent=2))
    print("| recipe | artifact | bytes | gzip | accuracy | drop (pts) | p50 1T ms |\n|---|---|---|---|---|---|---|")
    for recipe, row in rows.items():
        print(f"| {recipe} | {row['artifact']} | {row['bytes']:,} | {row['gzip_bytes']:,} | {row['accuracy']:.4f} | "
              f"{row['drop_pts']:.2f} | {row['p50_ms_1t']:.3f} |")
    print("\n| goal | measured | met |\n|---|---|---|")
    for goal, (value, ok) in goals.items():
        print(f"| {goal} | {value} | {'yes' if ok else 'NO'} |")
    print(f"\ncompress wall time {seconds} s on {result['images']} validation images", file=sys.stderr)
    return 0


def _ratio(value: int, base: int, goal: float) -> tuple[str, bool]:
    return f"{value / base:.3f}x", value / base <= goal


if __name__ == "__main__":
    sys.exit(main())
