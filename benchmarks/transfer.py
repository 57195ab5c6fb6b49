"""Transfer-learning benchmarks of issue #7, side by side in one run, on the built-in digits (offline).

    python benchmarks/transfer.py [--out benchmarks] [--epochs 10] [--image-size 160]

The digits are split by class: 0-4 is the *source* task (each digit at four rotations: 20 classes),
5-9 the *target* task, so nothing of the target's classes is seen before transfer. A source model
(MobileNetV2 alpha 0.35, 48 px, prototype head) is trained from scratch on the source classes; its
backbone is the "pretrained" backbone of everything below.

1. Frozen-backbone (feature extraction) throughput on the target data, same images, epochs and
   head: the Keras transfer-learning tutorial's approach (a frozen nested base model run on every
   batch of every epoch, images from `image_dataset_from_directory`) against `edgetl train` with the
   feature cache. Throughput = epochs x training images / wall seconds of the frozen phase's epochs
   (validation included). Goal: >= 10x, validation accuracy within 1 pt. The cache's one-time
   extraction is reported too, and the end-to-end ratio with a cold cache (extraction included).
2. Transfer gain: the target task with few images per class, transfer (source backbone, head then
   fine-tuning) against training from scratch with the same number of epochs. Transfer must win.
3. Few-shot: the source run has a prototype head; 5-way accuracy on the target's validation images
   with prototypes from 1 and from 5 target images per class (mean over 10 random draws).

Writes transfer.json beside this file (or --out).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SOURCE_CLASSES = ("0", "1", "2", "3", "4")  # x 4 rotations
TARGET_CLASSES = ("5", "6", "7", "8", "9")
BACKBONE = {"backbone": "mobilenet_v2", "alpha": 0.35, "seed": 0, "augment": False, "batch_size": 32}
SOURCE_SIZE = 48  # the source trains from scratch at 48 px; its BatchNorm statistics belong to that size


def split_digits(root: Path) -> dict[str, Path]:
    """source/ (digits 0-4, each at 4 rotations: 20 classes), target-train/, target-val/ (digits 5-9,
    80/20 per class in file order) and target-few/ (the first 10 target-train images per class)."""
    from PIL import Image

    from edgetl.demo import write_digits_folder

    everything = root / "all"
    write_digits_folder(everything)
    folders = {name: root / name for name in ("source", "target-train", "target-val", "target-few")}
    for digit in SOURCE_CLASSES:
        for turns in range(4):  # more source classes than targets: features that do not collapse to 5 directions
            folder = folders["source"] / f"{digit}r{turns * 90}"
            folder.mkdir(parents=True)
            for f in sorted((everything / digit).iterdir()):
                Image.open(f).rotate(90 * turns).save(folder / f.name)
    for digit in TARGET_CLASSES:
        files = sorted((everything / digit).iterdir())
        cut = int(len(files) * 0.8)
        for name, chosen in (("target-train", files[:cut]), ("target-val", files[cut:]), ("target-few", files[:10])):
            (folders[name] / digit).mkdir(parents=True)
            for f in chosen:
                shutil.copy(f, folders[name] / digit / f.name)
    return folders


def train_source(folders: dict[str, Path], work: Path) -> Path:
    """The source model, with the prototype head: its backbone serves every transfer below, and the
    run itself the few-shot test (target classes enrolled from 1 or 5 images)."""
    import edgetl

    run = work / "source-run"
    edgetl.train(str(folders["source"]), str(run), **BACKBONE | {
        "weights": "none", "image_size": SOURCE_SIZE, "epochs": 0, "fine_tune_epochs": 10, "fine_tune_layers": "all",
        "fine_tune_learning_rate": 3e-3, "head": "prototype"})
    return run


def few_shot(source_run: Path, folders: dict[str, Path], shots: int, episodes: int = 10) -> dict:
    """5-way accuracy on target-val of prototypes enrolled from `shots` random target-train images per class."""
    from edgetl.artifacts.run_dir import Run, load_images
    from edgetl.training import prototypes

    run = Run.open(source_run)
    embed = prototypes.embedding_model(run.model)

    def embeddings(paths: list[Path]) -> np.ndarray:
        return embed(load_images([str(p) for p in paths], run.image_size, run.preprocessing), training=False).numpy()

    pool = {d: sorted((folders["target-train"] / d).iterdir()) for d in TARGET_CLASSES}
    val = [(p, i) for i, d in enumerate(TARGET_CLASSES) for p in sorted((folders["target-val"] / d).iterdir())]
    val_embeddings, val_labels = embeddings([p for p, _ in val]), np.array([i for _, i in val])
    pool_embeddings = {d: embeddings(paths) for d, paths in pool.items()}
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(episodes):
        table = np.stack([prototypes.unit(pool_embeddings[d][rng.choice(len(pool[d]), shots, replace=False)].mean(0))
                          for d in TARGET_CLASSES])
        scores.append(float(np.mean((val_embeddings @ table.T).argmax(axis=1) == val_labels)))
    return {"shots": shots, "episodes": episodes, "accuracy_mean": round(float(np.mean(scores)), 4),
            "accuracy_std": round(float(np.std(scores)), 4), "val_images": len(val)}


def keras_tutorial_baseline(source_run: Path, folders: dict[str, Path], image_size: int, epochs: int,
                            seed: int) -> dict:
    """The Keras transfer-learning tutorial's feature extraction, written as a user would, same backbone."""
    from edgetl.network.model import copy_matching_weights, load_model
    from edgetl.tf_env import keras, tf

    k = keras()
    k.utils.set_random_seed(seed)
    # The tutorial's base_model: tf.keras.applications.MobileNetV2(input_shape, include_top=False) built at
    # this image size (its padding follows the size), with the source run's weights instead of ImageNet's.
    rebuilt = k.applications.MobileNetV2(input_shape=(image_size, image_size, 3), alpha=BACKBONE["alpha"],
                                         include_top=False, weights=None)
    copy_matching_weights(load_model(source_run / "model.keras"), rebuilt.layers)
    rebuilt.trainable = False

    def images(folder: Path, shuffle: bool) -> Any:
        ds = k.utils.image_dataset_from_directory(folder, image_size=(image_size, image_size), batch_size=32,
                                                  shuffle=shuffle, seed=seed, label_mode="int")
        return ds.prefetch(tf().data.AUTOTUNE)

    train_ds, val_ds = images(folders["target-train"], True), images(folders["target-val"], False)
    inputs = k.Input((image_size, image_size, 3))
    x = k.layers.Rescaling(1 / 127.5, offset=-1)(inputs)  # MobileNetV2's preprocess_input
    x = rebuilt(x, training=False)
    x = k.layers.GlobalAveragePooling2D()(x)
    x = k.layers.Dropout(0.2)(x)
    outputs = k.layers.Dense(len(TARGET_CLASSES), activation="softmax")(x)
    model = k.Model(inputs, outputs)
    # The tutorial's Adam at 1e-3, with the cosine decay edgetl uses, so that only the caching differs.
    steps = epochs * len(train_ds)
    model.compile(optimizer=k.optimizers.Adam(k.optimizers.schedules.CosineDecay(1e-3, steps)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    history = model.fit(train_ds, epochs=epochs, validation_data=val_ds, verbose=0)
    seconds = time.perf_counter() - started
    count = sum(1 for _ in folders["target-train"].rglob("*.png"))
    return {"seconds": round(seconds, 2), "images_per_second": round(epochs * count / seconds, 1),
            "val_accuracy": round(max(history.history["val_accuracy"]), 4), "train_images": count}


def edgetl_cached(source_run: Path, folders: dict[str, Path], work: Path, image_size: int, epochs: int,
                  seed: int) -> dict:
    import edgetl

    manifest = edgetl.train(str(folders["target-train"]), str(work / f"cached-run-{seed}"), **BACKBONE | {"seed": seed,
        "weights": str(source_run), "image_size": image_size, "epochs": epochs, "val_dir": str(folders["target-val"]),
        "feature_cache": "on"})
    cache = manifest.sections["feature_cache"]
    seconds = manifest.metrics["phase_seconds"]["head"]  # the whole frozen phase: extraction, checkpoints
    epoch_seconds = seconds - cache["extract_seconds"]
    count = sum(manifest.sections["dataset"]["train_counts"].values())
    return {"seconds": round(seconds, 2), "extract_seconds": cache["extract_seconds"],
            "epoch_seconds": round(epoch_seconds, 2), "images_per_second": round(epochs * count / seconds, 1),
            "steady_images_per_second": round(epochs * count / epoch_seconds, 1),
            "val_accuracy": manifest.metrics["val_accuracy"], "train_images": count}


def transfer_gain(source_run: Path, folders: dict[str, Path], work: Path, image_size: int) -> dict:
    """10 images per target class: the source backbone (head, then all layers) vs the same epochs from scratch."""
    import edgetl

    common = BACKBONE | {"image_size": image_size, "val_dir": str(folders["target-val"]), "batch_size": 16}
    transfer = edgetl.train(str(folders["target-few"]), str(work / "few-transfer"), **common | {
        "weights": str(source_run), "epochs": 10, "fine_tune_epochs": 10, "fine_tune_layers": "all",
        "fine_tune_learning_rate": 1e-4})
    scratch = edgetl.train(str(folders["target-few"]), str(work / "few-scratch"), **common | {
        "weights": "none", "epochs": 0, "fine_tune_epochs": 20, "fine_tune_layers": "all",
        "fine_tune_learning_rate": 3e-3})
    return {"images_per_class": 10, "epochs": 20, "transfer_accuracy": transfer.metrics["val_accuracy"],
            "scratch_accuracy": scratch.metrics["val_accuracy"], "val_images": transfer.metrics["val_images"]}


SEEDS = (0, 1, 2)


def _mean(runs: list[dict]) -> dict:
    """Mean of each number over seeds, and the per-seed accuracies."""
    out = {key: round(float(np.mean([r[key] for r in runs])), 4) for key in runs[0]}
    out["val_accuracy_per_seed"] = [r["val_accuracy"] for r in runs]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=160,
                        help="image size of the feature-extraction comparison (the Keras tutorial's 160 px); "
                             "the source and the transfer-gain runs use 48 px, the size the source was trained at")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgetl-transfer-") as tmp:
        work = Path(tmp)
        import os

        os.environ["EDGETL_CACHE"] = str(work / "cache")  # a cold cache: extraction is timed
        folders = split_digits(work / "digits")
        started = time.perf_counter()
        source_run = train_source(folders, work)
        source_seconds = round(time.perf_counter() - started, 1)
        # Three seeds each (shuffle order, dropout, head initialization): accuracy on 181 images moves
        # by a point or two between seeds alone. The first edgetl run extracts; the others hit the cache.
        baselines = [keras_tutorial_baseline(source_run, folders, args.image_size, args.epochs, s) for s in SEEDS]
        cacheds = [edgetl_cached(source_run, folders, work, args.image_size, args.epochs, s) for s in SEEDS]
        baseline, cached = _mean(baselines), _mean(cacheds)
        cached["extract_seconds"] = cacheds[0]["extract_seconds"]
        cached["seconds"] = cacheds[0]["seconds"]  # cold cache
        gain = transfer_gain(source_run, folders, work, SOURCE_SIZE)
        shots = [few_shot(source_run, folders, k) for k in (1, 5)]
    # Throughput of the frozen phase's epochs; the one-time extraction is reported apart (end to end),
    # since a cache entry is reused by every later run on the same images and backbone.
    ratio = cached["steady_images_per_second"] / baseline["images_per_second"]
    end_to_end = baseline["seconds"] / cached["seconds"]
    drop = (baseline["val_accuracy"] - cached["val_accuracy"]) * 100
    results = {
        "setup": {"backbone": "mobilenet_v2", "alpha": 0.35, "image_size": args.image_size, "epochs": args.epochs,
                  "source_and_transfer_gain_image_size": SOURCE_SIZE,
                  "source_classes": SOURCE_CLASSES, "target_classes": TARGET_CLASSES,
                  "source_train_seconds": source_seconds},
        "feature_extraction": {"keras_tutorial": baseline, "edgetl_cached": cached,
                               "throughput_ratio": round(ratio, 1), "goal_ratio": 10,
                               "end_to_end_ratio_cold_cache": round(end_to_end, 1),
                               "accuracy_gap_pts": round(drop, 2), "goal_gap_pts": 1.0,
                               "met": ratio >= 10 and abs(drop) <= 1.0},
        "transfer_gain": gain | {"met": gain["transfer_accuracy"] > gain["scratch_accuracy"] + 0.05},
        "few_shot_prototypes": shots,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transfer.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
