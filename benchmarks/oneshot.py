"""One-shot recognition on classes held out of training (issue #24), side by side in one run, offline.

    python benchmarks/oneshot.py [--per-class 40] [--image-size 64] [--episodes 600] [--out benchmarks/oneshot.json]

Data: scikit-learn's UCI handwritten digits (real scans, what `edgetl demo` writes), each digit at four
rotations, so 40 classes. Training sees digits 0-4 (20 classes); evaluation uses digits 5-9 (20 classes the
model never saw), `--per-class` images of each.

Rows, all on the same episodes (`edgetl evaluate`'s protocol: 5-way 1-shot and 5-way 5-shot, 15 queries per
class, mean accuracy with its 95 % interval, verification ROC AUC/EER on every pair of the unseen images):
- raw ImageNet features: EfficientNet-Lite0's average-pooled features, no training on these images;
- the prototype head and the siamese head, trained with `edgetl train`'s defaults (only --no-flip: a
  mirrored digit is another symbol) from the same ImageNet weights, float (Keras) and int8 (the exported
  embedding.tflite, LiteRT);
- latency of one embedding (fp32 and int8 .tflite, 1 thread, interleaved side by side).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEEN, UNSEEN = ("0", "1", "2", "3", "4"), ("5", "6", "7", "8", "9")
HEADS = ("prototype", "siamese")
SETTINGS = ((5, 1), (5, 5))


def write_rotated(root: Path, digits: tuple[str, ...], per_class: int, seed: int) -> Path:
    """root/<digit>r<angle>/: `per_class` images of each digit at 0/90/180/270 degrees (different scans per angle)."""
    from PIL import Image

    from edgetl.demo import write_digits_folder

    everything = root.parent / "all"
    write_digits_folder(everything)
    rng = np.random.default_rng(seed)
    for digit in digits:
        files = sorted((everything / digit).iterdir())
        order = rng.permutation(len(files))
        for turn in range(4):
            folder = root / f"{digit}r{turn * 90}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in order[turn * per_class:(turn + 1) * per_class] if 4 * per_class <= len(files) else \
                    order[:per_class]:
                Image.open(files[i]).rotate(90 * turn).save(folder / files[i].name)
    return root


def evaluate_all(model: str, unseen: Path, episodes: int, baseline: bool) -> dict[str, Any]:
    import edgetl

    rows = {}
    for way, shot in SETTINGS:
        result = edgetl.evaluate(model, str(unseen), way=way, shot=shot, episodes=episodes, baseline=baseline)
        rows[f"{way}-way {shot}-shot"] = result
    return rows


def embedding_latency(artifacts: dict[str, Path], image_size: int) -> dict[str, Any]:
    from edgetl.runner.latency import interleaved
    from edgetl.targets import open_session

    image = np.random.default_rng(0).uniform(-1, 1, (1, image_size, image_size, 3)).astype(np.float32)
    calls = {}
    for name, path in artifacts.items():
        session = open_session(path, num_threads=1)
        calls[name] = (lambda s: lambda: s.predict(image))(session)
    return {name: {k: round(v, 4) for k, v in stats.items()} for name, stats in interleaved(calls, 3.0).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "oneshot.json")
    parser.add_argument("--work", type=Path, default=None, help="keep the data and runs here")
    args = parser.parse_args(argv)

    import edgetl
    from edgetl.errors import CheckFailedError
    from edgetl.tf_env import versions

    work = args.work or Path(tempfile.mkdtemp(prefix="edgetl-oneshot-"))
    started = time.perf_counter()
    seen = write_rotated(work / "seen", SEEN, args.per_class, args.seed)
    unseen = write_rotated(work / "unseen", UNSEEN, args.per_class, args.seed + 1)
    results: dict[str, Any] = {
        "data": {"train_classes": 20, "unseen_classes": 20, "per_class": args.per_class,
                 "image_size": args.image_size, "backbone": "efficientnet_lite0 (ImageNet)"},
        "episodes": args.episodes, "heads": {}, "versions": versions()}
    for head in HEADS:
        run = work / f"run-{head}"
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.perf_counter()
        manifest = edgetl.train(str(seen), str(run), backbone="efficientnet_lite0", image_size=args.image_size,
                                head=head, flip=False, seed=args.seed)
        train_seconds = time.perf_counter() - t0
        float_artifact = edgetl.export(str(run), format="tflite", quantize="none")
        float_folder, int8_folder = run / "artifacts" / "tflite-none", run / "artifacts" / "tflite-int8"
        row = results["heads"][head] = {
            "train_seconds": round(train_seconds, 1), "val_accuracy": manifest.metrics["val_accuracy"],
            "similarity": manifest.sections["similarity"],
            "float": evaluate_all(str(run), unseen, args.episodes, baseline=head == HEADS[0]),
            "embedding_bytes": {"fp32": float_artifact.files["embedding.tflite"].bytes}}
        embeddings = {"fp32": float_folder / "embedding.tflite"}
        try:
            artifact = edgetl.export(str(run), format="tflite", quantize="int8")
        except CheckFailedError as exc:  # recorded: the int8 export's own verification said no
            row["int8_refused"] = str(exc)
        else:
            row["int8_embedding_checks"] = {k: v for k, v in artifact.sections["prototypes"].items()
                                            if k not in ("embedding_file", "table_file")}
            row["int8"] = evaluate_all(str(int8_folder), unseen, args.episodes, baseline=False)
            row["embedding_bytes"]["int8"] = artifact.files["embedding.tflite"].bytes
            embeddings["int8"] = int8_folder / "embedding.tflite"
        row["latency_ms"] = embedding_latency(embeddings, args.image_size)
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(render(results))
    return 0


def render(results: dict[str, Any]) -> str:
    lines = ["| embedding | 5-way 1-shot | 5-way 5-shot | pair ROC AUC | EER | FAR at the run's threshold (set 0.01) |",
             "|---|---:|---:|---:|---:|---:|"]

    def cell(doc: dict[str, Any]) -> str:
        return f"{doc['accuracy']:.4f} ± {doc['ci95']:.4f}"

    first = results["heads"][HEADS[0]]["float"]
    raw = {k: v["imagenet_features"] for k, v in first.items()}
    lines.append(f"| raw ImageNet features | {cell(raw['5-way 1-shot'])} | {cell(raw['5-way 5-shot'])} | "
                 f"{raw['5-way 1-shot']['roc_auc']:.4f} | {raw['5-way 1-shot']['eer']:.4f} | - |")
    for head, doc in results["heads"].items():
        for mode in ("float", "int8"):
            if mode not in doc:
                lines.append(f"| {head} {mode} | refused: {doc.get('int8_refused', '')[:160]} | | | | |")
                continue
            rows = {k: v["model"] for k, v in doc[mode].items()}
            at = rows["5-way 1-shot"].get("at_run_threshold", {})
            lines.append(f"| {head} {mode} | {cell(rows['5-way 1-shot'])} | {cell(rows['5-way 5-shot'])} | "
                         f"{rows['5-way 1-shot']['roc_auc']:.4f} | {rows['5-way 1-shot']['eer']:.4f} | "
                         f"{at.get('far', float('nan')):.4f} |")
    lines += ["", "| head | train s | val acc (seen classes) | int8 mean cosine | int8 decisions agree | "
                  "embedding ms fp32 / int8 (1 thread) |", "|---|---:|---:|---:|---:|---:|"]
    for head, doc in results["heads"].items():
        checks, latency = doc.get("int8_embedding_checks", {}), doc["latency_ms"]
        int8_ms = f"{latency['int8']['p50_ms']:.3f}" if "int8" in latency else "-"
        lines.append(f"| {head} | {doc['train_seconds']:.0f} | {doc['val_accuracy']:.4f} | "
                     f"{checks.get('embedding_mean_cosine', float('nan')):.4f} | "
                     f"{checks.get('decision_agreement', float('nan')):.4f} | {latency['fp32']['p50_ms']:.3f} / {int8_ms} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
