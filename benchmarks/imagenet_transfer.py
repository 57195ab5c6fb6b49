"""Issue #17: transfer from real ImageNet weights against the plain alternatives, side by side, offline.

    python benchmarks/imagenet_transfer.py [--datasets digits,textures] [--per-class 10,30,all]
                                           [--image-size 96] [--out benchmarks]

For each dataset and training-set size (images per class), on the same images and the same held-out
validation folder:

- probe: what a data scientist with these weights would do: pooled EfficientNet-Lite0 ImageNet features
  (the backbone as edgetl builds it, same resize and preprocessing) and scikit-learn's
  LogisticRegression (default C, max_iter 5000) on them;
- edgetl head: `edgetl train DATA -o RUN --val-dir VAL --fine-tune-epochs 0`: the head alone on the frozen
  ImageNet EfficientNet-Lite0 (edgetl's default backbone), on cached features;
- edgetl default: `edgetl train DATA -o RUN --val-dir VAL`, nothing else: the head, then 5 epochs
  fine-tuning every backbone layer (BatchNorm frozen) at 3e-4 on the images as they are;
- edgetl --augment: the default plus `--augment` (random flip, crop, rotation, brightness, contrast while
  fine-tuning);
- scratch: `--weights none`, otherwise defaults (the whole network, 500 steps at 3e-3, augmented);
  `--no-scratch` leaves it out (it is most of the time), writing imagenet_transfer_no_scratch.json.

Every edgetl run is at --image-size (default 96 px; the backbone's own 224 px costs 5x the time on 2
cores), everything else as a user would type it. And the feature cache with the real backbone:
the head phase (the frozen backbone), cache on vs off, same epochs, images per second.

Datasets (both real, both offline):
- digits: scikit-learn's UCI handwritten digits (what `edgetl demo` writes), 10 classes;
- textures: ten real photographs that scikit-image ships (brick, grass, gravel, coins, moon, ...),
  grayscale; a class is the photograph, images are random crops (48-160 px, resized to 64 px);
  training crops come from the top 60 % of each photograph, validation crops from the bottom 35 %,
  so no validation pixel was seen in training.

Writes imagenet_transfer.json beside this file (or --out) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXTURE_PHOTOS = ("astronaut", "brick", "camera", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
                  "immunohistochemistry", "moon")
VAL_PER_CLASS = 40


def write_digits(root: Path, seed: int) -> tuple[Path, Path]:
    """pool/<class>/ (all but the validation images) and val/<class>/ (VAL_PER_CLASS per class, random)."""
    from edgetl.demo import write_digits_folder

    everything = root / "all"
    write_digits_folder(everything)
    rng = np.random.default_rng(seed)
    for folder in sorted(everything.iterdir()):
        files = sorted(folder.iterdir())
        order = rng.permutation(len(files))
        for rank, i in enumerate(order):
            split = "val" if rank < VAL_PER_CLASS else "pool"
            target = root / split / folder.name / files[i].name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(files[i], target)
    return root / "pool", root / "val"


def write_textures(root: Path, seed: int, train_crops: int = 150) -> tuple[Path, Path]:
    import skimage.color
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in TEXTURE_PHOTOS:
        photo = getattr(skimage.data, name)()
        gray = photo if photo.ndim == 2 else (skimage.color.rgb2gray(photo[..., :3]) * 255).round().astype(np.uint8)
        height = gray.shape[0]
        regions = {"pool": (0, int(height * 0.6), train_crops), "val": (int(height * 0.65), height, VAL_PER_CLASS)}
        for split, (top, bottom, count) in regions.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                size = int(rng.integers(48, min(160, bottom - top, gray.shape[1]) + 1))
                y = int(rng.integers(top, bottom - size + 1))
                x = int(rng.integers(0, gray.shape[1] - size + 1))
                crop = Image.fromarray(gray[y:y + size, x:x + size]).resize((64, 64), Image.BILINEAR)
                crop.save(folder / f"{name}_{i:03d}.png")
    return root / "pool", root / "val"


def subset(pool: Path, per_class: int | None, target: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for folder in sorted(pool.iterdir()):
        files = sorted(folder.iterdir())
        chosen = files if per_class is None else [files[i] for i in sorted(rng.choice(len(files), per_class, False))]
        (target / folder.name).mkdir(parents=True)
        for f in chosen:
            os.link(f, target / folder.name / f.name)
    return target


def pooled_features(run: Path, folder: Path, image_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The head-only run's backbone (untouched ImageNet weights) pooled, on the folder's images, no augmentation."""
    from edgetl.backbones import get_backbone
    from edgetl.data.dataset_index import index_folder
    from edgetl.data.pipeline import make_dataset
    from edgetl.network.model import MODEL_FILE, load_model
    from edgetl.tf_env import keras

    model = load_model(run / MODEL_FILE)
    extractor = keras().Model(model.input, model.get_layer("head_pool").output)
    index = index_folder(folder)
    ds = make_dataset(index.paths, index.labels, image_size=image_size, batch_size=64,
                      preprocessing=get_backbone("efficientnet_lite0").preprocessing, training=False)
    return extractor.predict(ds, verbose=0), np.asarray(index.labels), list(index.classes)


def probe(frozen_run: Path, train: Path, val: Path, image_size: int) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    x, y, classes = pooled_features(frozen_run, train, image_size)
    xv, yv, val_classes = pooled_features(frozen_run, val, image_size)
    assert classes == val_classes
    clf = LogisticRegression(max_iter=5000).fit(x, y)
    return {"val_accuracy": round(float(np.mean(clf.predict(xv) == yv)), 4),
            "seconds": round(time.perf_counter() - started, 1)}


def edgetl_run(train: Path, val: Path, out: Path, **options: Any) -> dict[str, Any]:
    import edgetl

    started = time.perf_counter()
    manifest = edgetl.train(str(train), str(out), val_dir=str(val), overwrite=True, **options)
    metrics = manifest.metrics
    return {"val_accuracy": metrics["val_accuracy"], "best_epoch": metrics["best_epoch"],
            "learning": metrics.get("learning", {}).get("status"), "seconds": round(time.perf_counter() - started, 1)}


def cache_speedup(train: Path, val: Path, work: Path, image_size: int, epochs: int = 10) -> dict[str, Any]:
    """Frozen phase, no augmentation, feature cache on vs off: images/s over the head epochs."""
    from edgetl.artifacts.manifest import read_manifest

    out = {}
    for mode in ("off", "on"):
        result = edgetl_run(train, val, work / f"cache-{mode}", image_size=image_size, epochs=epochs,
                            fine_tune_epochs=0, feature_cache=mode)
        manifest = read_manifest(work / f"cache-{mode}")
        images = sum(manifest.sections["dataset"]["train_counts"].values())
        head_seconds = manifest.metrics["phase_seconds"]["head"]
        extract = manifest.sections.get("feature_cache", {}).get("extract_seconds", 0.0) if mode == "on" else 0.0
        out[mode] = {"val_accuracy": result["val_accuracy"], "head_seconds": head_seconds, "extract_seconds": extract,
                     "images_per_second": round(epochs * images / max(head_seconds - extract, 1e-6), 1)}
    out["speedup_steady"] = round(out["on"]["images_per_second"] / out["off"]["images_per_second"], 1)
    out["speedup_end_to_end"] = round(out["off"]["head_seconds"] / out["on"]["head_seconds"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="digits,textures")
    parser.add_argument("--per-class", default="10,30,all")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-scratch", action="store_true", help="leave out the from-scratch runs (the slow part)")
    parser.add_argument("--no-cache", action="store_true", help="leave out the feature-cache speed-up")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    sizes = [None if s == "all" else int(s) for s in args.per_class.split(",")]
    writers = {"digits": write_digits, "textures": write_textures}
    results: dict[str, Any] = {"image_size": args.image_size, "seed": args.seed, "rows": [], "cache": {}}
    with tempfile.TemporaryDirectory(prefix="edgetl-imagenet-transfer-") as tmp:
        work = Path(tmp)
        os.environ["EDGETL_CACHE"] = str(work / "cache")
        for dataset in args.datasets.split(","):
            pool, val = writers[dataset](work / dataset, args.seed)
            for per_class in sizes:
                name = f"{dataset}-{per_class or 'all'}"
                train = subset(pool, per_class, work / name / "train", args.seed)
                common = {"image_size": args.image_size, "seed": args.seed}
                head = edgetl_run(train, val, work / name / "head", fine_tune_epochs=0, **common)
                row = {"dataset": dataset, "per_class": per_class or "all",
                       "train_images": sum(1 for _ in train.rglob("*.png")),
                       "probe": probe(work / name / "head", train, val, args.image_size),
                       "edgetl_head": head,
                       "edgetl_default": edgetl_run(train, val, work / name / "default", **common),
                       "edgetl_augmented": edgetl_run(train, val, work / name / "augmented", augment=True, **common),
                       "scratch": None if args.no_scratch else
                       edgetl_run(train, val, work / name / "scratch", weights="none", **common)}
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
            if not args.no_cache:
                results["cache"][dataset] = cache_speedup(pool, val, work / dataset, args.image_size)
                print(json.dumps({dataset: results["cache"][dataset]}), flush=True)
    out_name = "imagenet_transfer_no_scratch.json" if args.no_scratch else "imagenet_transfer.json"
    (args.out / out_name).write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))
    return 0


def render(results: dict[str, Any]) -> str:
    columns = ("probe", "edgetl_head", "edgetl_default", "edgetl_augmented", "scratch")
    lines = ["| dataset | per class | probe | edgetl head | edgetl default | edgetl --augment | scratch |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        cells = [f"{r[k]['val_accuracy']:.3f}" if r.get(k) else "-" for k in columns]
        lines.append(f"| {r['dataset']} | {r['per_class']} | " + " | ".join(cells) + " |")
    for dataset, c in results["cache"].items():
        lines.append(f"\nfeature cache ({dataset}): {c['on']['images_per_second']} vs {c['off']['images_per_second']} "
                     f"images/s = {c['speedup_steady']}x steady, {c['speedup_end_to_end']}x end to end")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
