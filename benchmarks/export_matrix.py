"""Size and agreement of every export (2 formats x 4 modes) for one backbone, on the demo digits.

Trains the backbone from scratch on the built-in digits at the given size (offline), exports all
eight variants through `edgetl export` (each verified) and prints one table: file size, ratio to the
float file, top-1 agreement with the Keras model, max/mean |diff| of probabilities, and accuracy, all
on the whole validation split.

Run: python benchmarks/export_matrix.py [--backbone mobilenet_v2] [--image-size 224] [--epochs 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import edgetl
from edgetl.demo import write_digits_folder
from edgetl.exporting.exporter import export_run

MODES = ("none", "fp16", "dynamic", "int8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="edgetl-bench-export-matrix")
    args = parser.parse_args()
    out = Path(args.out)
    write_digits_folder(out / "digits")
    started = time.perf_counter()
    manifest = edgetl.train(str(out / "digits"), str(out / "run"), backbone=args.backbone, alpha=args.alpha,
                            image_size=args.image_size, weights="none", epochs=0, fine_tune_epochs=args.epochs,
                            fine_tune_layers="all", fine_tune_learning_rate=2e-3, augment=False, overwrite=True)
    print(f"trained {args.backbone} alpha {args.alpha} at {args.image_size} px in {time.perf_counter() - started:.0f} s:"
          f" validation accuracy {manifest.metrics['val_accuracy']:.4f} on {manifest.metrics['val_images']} images")
    rows, float_bytes = [], {}
    for fmt in ("tflite", "onnx"):
        for mode in MODES:
            numbers = export_run(out / "run", format=fmt, quantize=mode, verify_size=100_000).metrics
            float_bytes.setdefault(fmt, numbers["bytes"])
            rows.append((f"{fmt}-{mode}", numbers, numbers["bytes"] / float_bytes[fmt]))
    print(f"{'variant':<15} {'bytes':>10} {'x float':>7} {'agree':>6} {'max|d|':>9} {'mean|d|':>9} {'acc':>6}")
    for name, n, ratio in rows:
        print(f"{name:<15} {n['bytes']:>10,} {ratio:>7.3f} {n['top1_agreement']:>6.4f} {n['max_abs_diff']:>9.2e} "
              f"{n['mean_abs_diff']:>9.2e} {n['accuracy']:>6.4f}")


if __name__ == "__main__":
    main()
