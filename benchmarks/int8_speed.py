"""int8 vs fp32 LiteRT (XNNPACK) latency for every backbone, 1 and 2 threads, measured side by side.

Random weights with realistic activation ranges (He-scaled kernels, random BatchNorm statistics:
with Keras' default initial BatchNorm state the activations collapse, int8 calibration sees
degenerate ranges, and XNNPACK rejects some int8 ops, which would measure a model nobody ships),
10-class head, batch 1. Each model is converted to
float32 and to full-integer int8 exactly as `edgetl export` does (the same converter), then timed in
alternation so machine load affects both alike. Goal (issue #3): int8 <= 0.6x fp32 for every backbone.

Run: python benchmarks/int8_speed.py [--image-size 224] [--backbones a,b] [--min-time 1.0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from edgetl.backbones import BACKBONES, get_backbone
from edgetl.converters.base import ConversionInput, ExportOptions
from edgetl.converters.tflite import KerasToTFLite
from edgetl.network.model import build_classifier
from edgetl.runner.latency import measure
from edgetl.targets.litert import LiteRTSession


def randomize_realistically(model: object, seed: int = 0) -> None:
    from edgetl.tf_env import keras

    rng = np.random.default_rng(seed)
    layers = keras().layers
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            shape = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.8, 1.2, shape), rng.normal(0, 0.1, shape),
                               rng.normal(0, 0.1, shape), rng.uniform(0.8, 1.2, shape)])
        elif layer.weights:
            kernel, *bias = layer.get_weights()
            per_output = kernel.shape[:2] if isinstance(layer, layers.DepthwiseConv2D) else kernel.shape[:-1]
            scale = np.sqrt(2 / np.prod(per_output))
            layer.set_weights([rng.normal(0, scale, kernel.shape)] + [rng.normal(0, 0.1, b.shape) for b in bias])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--min-time", type=float, default=1.0)
    args = parser.parse_args()
    size = args.image_size
    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, (8, size, size, 3)).astype(np.float32)
    image = calibration[:1]
    print(f"{'backbone':<32} {'threads':>7} {'fp32 ms':>8} {'int8 ms':>8} {'int8/fp32':>9}")
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.backbones.split(","):
            model = build_classifier(get_backbone(name), size, 1.0, 10, imagenet=False, dropout=0.0)
            randomize_realistically(model)
            paths = {}
            for mode in ("none", "int8"):
                paths[mode] = Path(scratch) / f"{name}-{mode}.tflite"
                KerasToTFLite().convert(ConversionInput(model, size, [str(i) for i in range(10)], calibration),
                                        ExportOptions(format="tflite", quantize=mode), paths[mode])
            for threads in (1, 2):
                p50 = {mode: [] for mode in paths}
                for _ in range(3):  # alternate the two files, keep each median
                    for mode, path in paths.items():
                        stats = measure(lambda: LiteRTSession(path, num_threads=threads), image, threads=threads,
                                        warmup=10, min_runs=50, min_seconds=args.min_time / 3)
                        p50[mode].append(stats.p50_ms)
                fp32, int8 = float(np.median(p50["none"])), float(np.median(p50["int8"]))
                print(f"{name:<32} {threads:>7} {fp32:>8.3f} {int8:>8.3f} {int8 / fp32:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
