"""Issue #18: microcontroller files measured in TensorFlow Lite Micro itself, offline.

    python benchmarks/tflm.py [--sizes 96,64] [--epochs 8] [--out benchmarks]

For MobileNetV2 alpha 0.35 at each image size (96 px, and 64 px, the classic person-detection size),
trained on the demo's handwritten digits (scikit-learn's UCI set, 10 classes; from scratch, since the
alpha-0.35 ImageNet weights need a download), then `edgetl compress RUN --target mcu` (full int8,
int8 input and output):

- flash: the .tflite file's bytes (what the firmware's const array holds);
- arena: the smallest tensor arena TFLM allocates the model in (targets/tflm.py, bisection to 16
  bytes), beside edgetl's liveness estimate of the peak activations, and which board profiles fit;
- parity: TFLM's answers against LiteRT's on the same int8 file over the whole validation split
  (top-1 agreement; every flip listed), and both accuracies against the float Keras model;
- TFLM latency on this host (reference kernels, one thread): for orientation only, not device time.

Writes tflm.json beside this file (or --out) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(size: int, epochs: int, scratch: Path) -> dict:
    import numpy as np

    import edgetl
    from edgetl.artifacts.run_dir import Run, load_images
    from edgetl.demo import write_digits_folder
    from edgetl.targets import open_session
    from edgetl.targets.profiles import load_profile

    data = scratch / "digits"
    if not data.exists():
        write_digits_folder(data)
    run = scratch / f"run{size}"
    started = time.perf_counter()
    if (run / "manifest.json").is_file():  # --work DIR from an earlier run: the same training
        from edgetl.artifacts.manifest import read_manifest

        manifest = read_manifest(run)
    else:
        manifest = edgetl.train(str(data), str(run), backbone="mobilenet_v2", alpha=0.35, image_size=size,
                                weights="none", epochs=epochs, overwrite=True)
    trained = time.perf_counter() - started
    report = edgetl.compress(str(run), target="mcu", threads=(1,))
    row = next(a for a in report["artifacts"] if a["runtime"] == "tflm")
    model = Path(row["path"])
    opened = Run.open(run)
    images = load_images(list(opened.splits[1].paths), opened.image_size, opened.preprocessing)
    labels = np.asarray(opened.splits[1].labels)
    micro = open_session(model, runtime="tflm")
    scores = {"tflm": micro.predict(images), "litert": open_session(model).predict(images),
              "litert_builtin": open_session(model, xnnpack=False).predict(images)}
    step = micro.outputs[0].scale  # one int8 step of the output
    on_tflm, on_litert = scores["tflm"].argmax(1), scores["litert"].argmax(1)

    def margin(probabilities: np.ndarray) -> int:  # top-1 minus top-2, in output int8 steps
        top = np.sort(probabilities)[::-1]
        return int(round((top[0] - top[1]) / step))

    flips = [{"image": opened.splits[1].paths[i], "tflm": opened.labels[on_tflm[i]],
              "litert": opened.labels[on_litert[i]], "truth": opened.labels[labels[i]],
              "tflm_margin_steps": margin(scores["tflm"][i]), "litert_margin_steps": margin(scores["litert"][i]),
              "max_output_diff_steps": int(round(np.abs(scores["tflm"][i] - scores["litert"][i]).max() / step))}
             for i in np.flatnonzero(on_tflm != on_litert)]
    differs = np.abs(scores["tflm"] - scores["litert"]).max(1) / step
    arena, estimate = row["tflm"]["arena_bytes"], row["peak_ram_estimate"]["peak_activation_bytes"]
    boards = {}
    for name in ("mcu", "cortex-m4", "cortex-m7"):
        profile = load_profile(name)
        boards[name] = {"arena_fits": arena <= profile.max_ram_bytes,
                        "flash_fits": row["bytes"] <= profile.max_model_bytes,
                        "max_ram_bytes": profile.max_ram_bytes, "max_model_bytes": profile.max_model_bytes}
    return {"image_size": size, "train_seconds": round(trained, 1),
            "float_val_accuracy": manifest.metrics["val_accuracy"],
            "artifact": row["name"], "flash_bytes": row["bytes"], "arena_bytes": arena, "estimate_bytes": estimate,
            "arena_over_estimate": round(arena / estimate, 2), "images": len(labels),
            "tflm_accuracy": float((on_tflm == labels).mean()), "litert_accuracy": float((on_litert == labels).mean()),
            "tflm_litert_top1_agreement": float((on_tflm == on_litert).mean()), "flips": flips,
            "tflm_litert_builtin_top1_agreement": float((on_tflm == scores["litert_builtin"].argmax(1)).mean()),
            "tflm_litert_builtin_identical_outputs": bool(np.array_equal(scores["tflm"], scores["litert_builtin"])),
            "images_with_any_output_diff": int((differs > 0.5).sum()),
            "max_output_diff_steps": int(round(float(differs.max()))),
            "tflm_host_p50_ms": row["latency"][0]["p50_ms"], "boards": boards,
            "recommended_for_mcu": (report["compress"]["recommended"] or {}).get("name")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="96,64")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--work", type=Path, default=None, help="Keep the data and runs here (reused when present).")
    args = parser.parse_args()
    from edgetl.tf_env import versions

    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        rows = [measure(int(size), args.epochs, work) for size in args.sizes.split(",")]
    result = {"backbone": "mobilenet_v2", "alpha": 0.35, "weights": "none (from scratch)", "epochs": args.epochs,
              "data": "UCI handwritten digits (scikit-learn), 10 classes", "target": "mcu",
              "versions": versions(("tflite-micro", "ai-edge-litert")), "rows": rows}
    (args.out / "tflm.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| px | flash bytes | TFLM arena | estimate | arena/estimate | fits | TFLM vs LiteRT (XNNPACK) top-1 | "
          "TFLM acc | LiteRT acc | float acc | TFLM host p50 ms |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        fits = ", ".join(name for name, b in r["boards"].items() if b["arena_fits"] and b["flash_fits"]) or "none"
        print(f"| {r['image_size']} | {r['flash_bytes']:,} | {r['arena_bytes']:,} | {r['estimate_bytes']:,} | "
              f"{r['arena_over_estimate']:.2f}x | {fits} | {r['tflm_litert_top1_agreement']:.4f} "
              f"({len(r['flips'])} flips; builtin kernels {r['tflm_litert_builtin_top1_agreement']:.4f}) | "
              f"{r['tflm_accuracy']:.4f} | {r['litert_accuracy']:.4f} | "
              f"{r['float_val_accuracy']:.4f} | {r['tflm_host_p50_ms']:.1f} |")


if __name__ == "__main__":
    main()
