"""Large datasets: peak memory and throughput of `edgetl train` against the number of images.

    python benchmarks/large_dataset.py [--sizes 5000,20000,50000] [--image-px 32] [--batch-size 64]
                                       [--out benchmarks/large_dataset.json] [--keep DIR]

For each size, small PNGs (10 classes, --image-px square) are generated in a temporary folder; then,
each in a fresh process so that its peak RSS (ru_maxrss) is its own:
- `pipeline`: edgetl's streaming input pipeline alone (pipeline.make_dataset, training=True, the
  run's decode/resize/normalize/batch/prefetch), one pass over the training split: images/s, peak RSS.
- `train`: `edgetl.train`, the smallest model (MobileNetV2 alpha 0.35 at the image size, from scratch,
  every layer trained, no augmentation, no feature cache), two epochs: the whole command's peak RSS
  and wall time, and the second epoch's images/s (its time has no tf.function tracing, but includes
  the epoch-end BatchNorm re-estimation (25 batches) and validation on the 10 % split).
Once: `step`, the training step alone on one in-memory batch repeated (no input pipeline): the
images/s the model can consume. The pipeline keeps up when its images/s exceeds the step's.
A `baseline` process (TensorFlow imported, the model built, no data) gives the fixed part of the RSS.
Prints a table and writes the JSON (default benchmarks/large_dataset.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = 10
REPO = Path(__file__).resolve().parent.parent


def generate(root: Path, count: int, px: int) -> float:
    """`count` PNGs in CLASSES folders: the class's colour as a square on noise (learnable, cheap)."""
    from PIL import Image

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(CLASSES, 3), dtype=np.uint8)
    for label in range(CLASSES):
        (root / f"class_{label}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label = i % CLASSES
        pixels = rng.integers(0, 80, size=(px, px, 3), dtype=np.uint8)
        lo = px // 5 + i % 3
        pixels[lo:px - lo, lo:px - lo] = colours[label]
        Image.fromarray(pixels).save(root / f"class_{label}" / f"img_{i:06d}.png", compress_level=1)
    return time.perf_counter() - started


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _train_options(args: dict[str, Any]) -> dict[str, Any]:
    options = {"backbone": "mobilenet_v2", "alpha": 0.35, "image_size": max(32, args["px"]), "weights": "none",
               "epochs": 0, "fine_tune_epochs": 2, "fine_tune_layers": "all", "batch_size": args["batch"],
               "augment": False, "val_split": 0.1, "seed": 0}
    import dataclasses

    from edgetl.training.config import TrainConfig

    if "feature_cache" in {f.name for f in dataclasses.fields(TrainConfig)}:
        options["feature_cache"] = "off"  # the image pipeline is what is measured
    return options


def child(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    sys.path.insert(0, str(REPO))
    if kind == "pipeline":
        from edgetl.backbones import get_backbone
        from edgetl.data import dataset_index as dsi
        from edgetl.data.pipeline import make_dataset

        full = dsi.index_data(Path(args["data"]))
        train, _ = dsi.stratified_split(full, 0.1, 0)
        ds = make_dataset(train.paths, train.labels, image_size=max(32, args["px"]), batch_size=args["batch"],
                          preprocessing=get_backbone("mobilenet_v2").preprocessing, training=True, seed=0)
        for _ in ds.take(2):  # warm-up: tf.data threads and graph tracing
            pass
        started = time.perf_counter()
        images = 0
        for batch, _labels in ds:
            images += int(batch.shape[0])
        seconds = time.perf_counter() - started
        return {"images": images, "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 1),
                "peak_rss_mib": round(peak_rss_mib(), 1)}
    if kind == "train":
        import edgetl

        started = time.perf_counter()
        manifest = edgetl.train(args["data"], args["out"], **_train_options(args))
        wall = time.perf_counter() - started
        history = manifest.sections["history"][-1]  # the second epoch: no tracing in its time
        train_images = sum(manifest.sections["dataset"]["train_counts"].values())
        return {"wall_seconds": round(wall, 1), "epoch_seconds": history["seconds"],
                "train_images": train_images, "val_accuracy": manifest.metrics["val_accuracy"],
                "peak_rss_mib": round(peak_rss_mib(), 1), "end_rss_mib": round(current_rss_mib(), 1)}
    if kind in ("step", "baseline"):
        from edgetl.backbones import get_backbone
        from edgetl.network.model import build_classifier
        from edgetl.tf_env import keras, tf

        px, batch = max(32, args["px"]), args["batch"]
        model = build_classifier(get_backbone("mobilenet_v2"), px, 0.35, CLASSES, imagenet=False, dropout=0.2)
        if kind == "baseline":
            return {"peak_rss_mib": round(peak_rss_mib(), 1)}
        model.compile(optimizer=keras().optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        x = tf().random.uniform([batch, px, px, 3], -1.0, 1.0)
        y = tf().random.uniform([batch], 0, CLASSES, dtype=tf().int32)
        ds = tf().data.Dataset.from_tensors((x, y)).repeat()
        model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0)  # tracing and warm-up
        steps = args["steps"]
        started = time.perf_counter()
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
        seconds = time.perf_counter() - started
        return {"steps": steps, "seconds": round(seconds, 2), "images_per_s": round(steps * batch / seconds, 1),
                "peak_rss_mib": round(peak_rss_mib(), 1)}
    raise SystemExit(f"unknown child {kind}")


def run_child(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    done = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(args)], capture_output=True,
                          text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,20000,50000")
    parser.add_argument("--image-px", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40, help="timed steps of the step-only measurement")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "large_dataset.json"))
    parser.add_argument("--keep", default=None, help="generate (and keep) the images under this folder")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child:
        print(json.dumps(child(ns.child[0], json.loads(ns.child[1]))))
        return
    sizes = [int(s) for s in ns.sizes.split(",")]
    common = {"px": ns.image_px, "batch": ns.batch_size, "steps": ns.steps}
    results: dict[str, Any] = {"settings": {**common, "sizes": sizes, "classes": CLASSES, "model": _model_text(ns)},
                               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                           "load_average": os.getloadavg()}, "sizes": []}
    results["baseline"] = run_child("baseline", common)
    results["step"] = run_child("step", common)
    print(f"baseline RSS (TensorFlow + model, no data): {results['baseline']['peak_rss_mib']:.0f} MiB; "
          f"training step alone: {results['step']['images_per_s']:.0f} images/s", flush=True)
    root = Path(ns.keep) if ns.keep else Path(tempfile.mkdtemp(prefix="edgetl-large-"))
    try:
        for size in sizes:
            data = root / f"data-{size}"
            generated = None
            if not data.exists():
                generated = round(generate(data, size, ns.image_px), 1)
            row = {"images": size, "generate_seconds": generated,
                   "pipeline": run_child("pipeline", common | {"data": str(data)})}
            out = root / f"run-{size}"
            shutil.rmtree(out, ignore_errors=True)
            row["train"] = run_child("train", common | {"data": str(data), "out": str(out)})
            row["train"]["epoch_images_per_s"] = round(row["train"]["train_images"] / row["train"]["epoch_seconds"], 1)
            results["sizes"].append(row)
            _write(results, Path(ns.out))
            print(_row_text(row), flush=True)
    finally:
        if not ns.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(table(results))


def _model_text(ns: Any) -> str:
    return f"mobilenet_v2 alpha 0.35, {max(32, ns.image_px)} px, from scratch, all layers, batch {ns.batch_size}"


def _row_text(row: dict[str, Any]) -> str:
    return (f"{row['images']:>6} images: pipeline {row['pipeline']['images_per_s']:.0f} img/s "
            f"(RSS {row['pipeline']['peak_rss_mib']:.0f} MiB); train epoch {row['train']['epoch_images_per_s']:.0f} img/s, "
            f"wall {row['train']['wall_seconds']:.0f} s, peak RSS {row['train']['peak_rss_mib']:.0f} MiB")


def table(results: dict[str, Any]) -> str:
    lines = ["| images | pipeline img/s | pipeline peak RSS MiB | train epoch img/s | step-only img/s | "
             "train wall s | train peak RSS MiB |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in results["sizes"]:
        lines.append(f"| {row['images']:,} | {row['pipeline']['images_per_s']:.0f} | {row['pipeline']['peak_rss_mib']:.0f} | "
                     f"{row['train']['epoch_images_per_s']:.0f} | {results['step']['images_per_s']:.0f} | "
                     f"{row['train']['wall_seconds']:.0f} | {row['train']['peak_rss_mib']:.0f} |")
    lines.append(f"\nbaseline (TensorFlow + model, no data): {results['baseline']['peak_rss_mib']:.0f} MiB peak RSS")
    return "\n".join(lines)


def _write(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
