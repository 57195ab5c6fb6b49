"""One prepared check for a GPU machine: train, export, and bench CPU vs CUDA vs TensorRT providers.

    python benchmarks/gpu_check.py [--out DIR] [--classes 8] [--per-class 100] [--image-size 96]
                                   [--epochs 3] [--timeout 1500]

Needs, beside edgetl: TensorFlow with CUDA (`pip install "tensorflow[and-cuda]"`) for GPU training,
and `onnxruntime-gpu` instead of `onnxruntime` for the CUDA/TensorRT providers (TensorRT also needs its
libraries, e.g. `pip install tensorrt`). On a machine without them every step still runs: training
on the CPU, and the GPU rows are skipped with the reason (that is also how it was checked here).

Steps, each a real `edgetl` command in a subprocess, each timed:
1. environment: `nvidia-smi -L`, the GPUs TensorFlow sees, onnxruntime's build and providers, and why
   each GPU provider can or cannot be used (edgetl.targets.ort.provider_status);
2. a generated image folder (`--classes` colours x `--per-class` PNGs at `--image-size`);
3. `edgetl train` from scratch (every layer, MobileNetV2 alpha 0.35): on the CPU (CUDA_VISIBLE_DEVICES=""),
   then, when TensorFlow sees a GPU, on the GPU (default placement), `--distribute mirrored` and
   `--mixed-precision`; wall time and validation accuracy of each;
4. `edgetl export` ONNX float32, fp16 and int8 (QDQ, what TensorRT takes) and TFLite float32;
5. `edgetl bench RUN --target x86-cpu --target cuda`: every ONNX file on the CPU, CUDA and TensorRT
   providers (TensorRT's engine cache on, so its engine is built once per file, not per session).
Prints one summary table and writes DIR/gpu_check.json. Whole run on an H200: a few minutes (the TensorRT
engine builds dominate); on 2 CPU cores with the defaults about 10 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def sh(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env={**os.environ, **(env or {})})
        return done.returncode, done.stdout, done.stderr, time.perf_counter() - started
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout:.0f} s", time.perf_counter() - started
    except FileNotFoundError as exc:
        return 127, "", str(exc), time.perf_counter() - started


def edgetl(*args: str, timeout: float, env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    return sh([sys.executable, "-m", "edgetl", *args], timeout, env)


def environment(timeout: float) -> dict[str, Any]:
    found: dict[str, Any] = {}
    code, out, err, _ = sh(["nvidia-smi", "-L"], 30)
    found["nvidia_smi"] = out.strip() if code == 0 else f"unavailable ({(err or out).strip()[:200]})"
    code, out, err, _ = sh([sys.executable, "-c", "import json, tensorflow as tf; print(json.dumps("
                            "[d.name for d in tf.config.list_physical_devices('GPU')]))"], timeout)
    found["tensorflow_gpus"] = json.loads(out.strip().splitlines()[-1]) if code == 0 else []
    code, out, err, _ = sh([sys.executable, "-c", "import json, onnxruntime as o; from edgetl.targets.ort import "
                            "provider_status; print(json.dumps({'version': o.__version__, 'device': o.get_device(), "
                            "'providers': o.get_available_providers(), 'gpu_providers': provider_status()}))"], timeout)
    found["onnxruntime"] = json.loads(out.strip().splitlines()[-1]) if code == 0 else {"error": err[-500:]}
    return found


def make_images(root: Path, classes: int, per_class: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(classes, 3), dtype=np.uint8)
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
            lo, hi = size // 5 + i % 5, size - size // 5 - i % 7
            pixels[lo:hi, lo:hi] = colours[label]
            Image.fromarray(pixels).save(folder / f"{i:04d}.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="keep everything here [default: a temporary folder]")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1500, help="seconds per step")
    args = parser.parse_args()
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="edgetl-gpu-check-"))
    root.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"environment": environment(args.timeout), "train": [], "export": [], "bench": None}
    env = result["environment"]
    print(f"nvidia-smi: {env['nvidia_smi']}")
    print(f"TensorFlow GPUs: {env['tensorflow_gpus'] or 'none'}")
    print(f"onnxruntime: {json.dumps(env['onnxruntime'])}", flush=True)

    data = root / "data"
    if not data.exists():
        make_images(data, args.classes, args.per_class, args.image_size)
    common = ["--backbone", "mobilenet_v2", "--alpha", "0.35", "--image-size", str(args.image_size), "--weights",
              "none", "--epochs", "0", "--fine-tune-epochs", str(args.epochs), "--fine-tune-layers", "all",
              "--fine-tune-learning-rate", "3e-3", "--batch-size", "32", "--no-augment", "--overwrite", "--json"]
    runs = [("cpu", [], {"CUDA_VISIBLE_DEVICES": ""})]
    if env["tensorflow_gpus"]:
        runs += [("gpu", [], {}), ("gpu-mirrored", ["--distribute", "mirrored"], {}),
                 ("gpu-mixed-precision", ["--mixed-precision"], {})]
    main_run = None
    for name, extra, run_env in runs:
        out = root / f"run-{name}"
        code, stdout, stderr, seconds = edgetl("train", str(data), "-o", str(out), *common, *extra,
                                               timeout=args.timeout, env=run_env)
        row: dict[str, Any] = {"name": name, "exit": code, "seconds": round(seconds, 1)}
        if code == 0:
            doc = json.loads(stdout)
            row |= {"val_accuracy": doc["metrics"]["val_accuracy"], "train_seconds": doc["metrics"]["train_seconds"],
                    "distribute": doc.get("distribute", {}).get("replicas")}
            main_run = out if main_run is None or name == "gpu" else main_run
        else:
            row["error"] = stderr.strip().splitlines()[-1:] if stderr.strip() else []
        result["train"].append(row)
        print(f"train {name}: exit {code}, {seconds:.1f} s, {row.get('val_accuracy', row.get('error'))}", flush=True)
    if main_run is None:
        print("no run trained; stopping")
        (root / "gpu_check.json").write_text(json.dumps(result, indent=2))
        return 1

    for fmt, mode in (("onnx", "none"), ("onnx", "fp16"), ("onnx", "int8"), ("tflite", "none")):
        code, _, stderr, seconds = edgetl("export", str(main_run), "--format", fmt, "--quantize", mode,
                                          "--calibration-size", "64", timeout=args.timeout)
        result["export"].append({"format": fmt, "quantize": mode, "exit": code, "seconds": round(seconds, 1),
                                 "error": stderr.strip().splitlines()[-1:] if code else None})
        print(f"export {fmt}-{mode}: exit {code}, {seconds:.1f} s", flush=True)

    trt_cache = root / "trt-cache"
    trt_cache.mkdir(exist_ok=True)
    code, stdout, stderr, seconds = edgetl(
        "bench", str(main_run), "--target", "x86-cpu", "--target", "cuda", "--threads", "1", "--runs", "50",
        "--min-time", "1", "--json", "-o", str(root / "bench"), timeout=args.timeout,
        env={"ORT_TENSORRT_ENGINE_CACHE_ENABLE": "1", "ORT_TENSORRT_CACHE_PATH": str(trt_cache)})
    print(f"bench: exit {code}, {seconds:.1f} s", flush=True)
    if code in (0, 1):
        report = json.loads(stdout)
        result["bench"] = [{"name": a["name"], "provider": a.get("provider", a["runtime"]),
                            "p50_ms": a["latency"][0]["p50_ms"] if a["latency"] else None,
                            "images_per_s_batch": (a["throughput"] or {}).get("images_per_s"),
                            "accuracy": (a["parity"] or {}).get("accuracy"), "skipped": a["skipped"]}
                           for a in report["artifacts"]]
        result["recommendations"] = {k: v.get("artifact") for k, v in report["recommendations"].items()}
    else:
        result["bench_error"] = stderr[-2000:]
    (root / "gpu_check.json").write_text(json.dumps(result, indent=2))
    print()
    print(summary(result))
    print(f"\nwrote {root / 'gpu_check.json'}")
    if not args.out:
        shutil.rmtree(root / "data", ignore_errors=True)
    return 0


def summary(result: dict[str, Any]) -> str:
    lines = ["| training | exit | wall s | val accuracy | replicas |", "| --- | ---: | ---: | ---: | ---: |"]
    for row in result["train"]:
        lines.append(f"| {row['name']} | {row['exit']} | {row['seconds']} | {row.get('val_accuracy', '-')} | "
                     f"{row.get('distribute', '-')} |")
    lines += ["", "| artifact | provider | p50 ms (batch 1) | images/s (batch 8) | accuracy | skipped |",
              "| --- | --- | ---: | ---: | ---: | --- |"]
    for row in result["bench"] or []:
        lines.append(f"| {row['name']} | {row['provider']} | {row['p50_ms'] if row['p50_ms'] is not None else '-'} | "
                     f"{row['images_per_s_batch'] or '-'} | {row['accuracy'] if row['accuracy'] is not None else '-'} | "
                     f"{row['skipped'] or ''} |")
    if result.get("recommendations"):
        lines.append(f"\nrecommended: {result['recommendations']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
