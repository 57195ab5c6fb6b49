"""`edgetl demo`: the whole flow on built-in data, offline: train, then compress for x86 within a budget.

Data: the UCI handwritten digits that scikit-learn ships inside its wheel (1,797 real 8x8 grayscale
scans of digits 0-9 written by 43 people). They are real images, need no network, and are small
enough to train on 2 CPU cores in minutes. The demo writes them out as an image folder (one
sub-folder per class) so users see the layout `edgetl train` expects.

ImageNet weights cannot be assumed offline, so the demo trains MobileNetV2 (alpha 0.35, 48 px) from
scratch (`--weights none`, every layer trainable). Augmentation is off: these scans are already
centred and size-normalized, and it did not help in our runs. On your own photos, with weights
available, `edgetl train` starts from ImageNet instead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.progress import say

DEMO_TARGET = "x86-cpu"  # its candidates: every quantization mode in TFLite and ONNX (8 artifacts)
DEMO_GATE_PTS = 0.5  # accuracy drop allowed vs the float model, in points

DEMO_OPTIONS: dict[str, Any] = {
    "backbone": "mobilenet_v2", "alpha": 0.35, "image_size": 48, "weights": "none",
    "epochs": 0, "fine_tune_epochs": 20, "fine_tune_layers": "all", "batch_size": 32,
    "fine_tune_learning_rate": 3e-3, "val_split": 0.2, "seed": 0, "augment": False,
    "overwrite": True,
}


def write_digits_folder(root: Path) -> int:
    """Write the digits as 4x-upscaled PNGs in root/<digit>/; return the image count. Idempotent."""
    from sklearn.datasets import load_digits

    from edgetl.tf_env import tf

    digits = load_digits()
    t = tf()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        path = root / str(label) / f"digit_{i:04d}.png"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0..16 intensities, ink high: invert to dark ink on white paper, as a scan would look.
        pixels = (255 - image * (255 / 16)).round().astype(np.uint8)
        pixels = np.kron(pixels, np.ones((4, 4), np.uint8))[..., None]
        path.write_bytes(t.io.encode_png(pixels).numpy())
    return len(digits.images)


def run_demo(output: str, epochs: int | None = None) -> dict[str, Any]:
    """Train, compress for x86 (every format x mode, benched, repaired if int8 misses the budget);
    return the numbers and a printable table."""
    import edgetl
    from edgetl.compressor import CompressOptions, run_compress
    from edgetl.compress_report import render_text

    started = time.perf_counter()
    root = Path(output)
    data_dir, run_dir = root / "digits", root / "run"
    count = write_digits_folder(data_dir)
    say(f"demo data: {count} handwritten digits written to {data_dir}/<digit>/*.png")
    options = dict(DEMO_OPTIONS)
    if epochs is not None:
        options["fine_tune_epochs"] = epochs
    manifest = edgetl.train(str(data_dir), str(run_dir), **options)
    trained = time.perf_counter()
    report = run_compress(run_dir, CompressOptions(target=DEMO_TARGET, max_accuracy_drop=DEMO_GATE_PTS,
                                                   verify_size=128, threads=(1, 2), min_runs=50))
    seconds = {"train": round(trained - started, 1), "compress": round(time.perf_counter() - trained, 1),
               "total": round(time.perf_counter() - started, 1)}
    metrics = manifest.metrics
    recommended = report["compress"]["recommended"]
    rows = [("data", f"{data_dir} ({count} images, 10 classes)"),
            ("backbone", f"{options['backbone']} alpha {options['alpha']} at {options['image_size']} px, "
                         f"weights {options['weights']}"),
            ("validation accuracy", f"{metrics['val_accuracy']:.4f} on {metrics['val_images']} held-out images "
                                    f"(chance 0.10), best epoch {metrics['best_epoch']}"),
            ("run", f"{run_dir} (artifacts in {run_dir}/artifacts, reports in {report['report_dir']})"),
            ("recommended (x86-cpu)", f"{recommended['name']}, {recommended['accuracy_drop_pts'] + 0.0:.2f} pts below "
                                      f"float (budget {DEMO_GATE_PTS})" if recommended else
                                      f"none within {DEMO_GATE_PTS} pts (see the report)"),
            ("wall time", f"{seconds['total']} s (train {seconds['train']}, compress {seconds['compress']})")]
    width = max(len(k) for k, _ in rows)
    summary = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    return {"data": str(data_dir), "run": str(run_dir), "val_accuracy": metrics["val_accuracy"],
            "per_class_accuracy": metrics["per_class_accuracy"], "seconds": seconds,
            "recommended": recommended, "report_dir": report["report_dir"],
            "table": f"{summary}\n\n{render_text(report)}"}
