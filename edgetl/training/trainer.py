"""`edgetl train`: feature extraction on a frozen backbone, then fine-tuning (LP-FT).

Phase 1 trains only the head, on the images as they are (so on cached backbone features where it
can): a linear probe. Phase 2 (`fine_tune_epochs`) unfreezes `fine_tune_layers` backbone layers (all
by default) at a lower learning rate, starting from that head, on the images as they are unless
`augment` is asked for. With pretrained weights BatchNorm stays in inference mode (its statistics
belong to the source data). From scratch (`--weights none`) phase 1 trains the whole network,
augmented, BatchNorm included.
The best epoch by validation accuracy is kept. The run directory is assembled in a hidden staging
folder and renamed into place only when complete, manifest last. Checkpoints after epochs
(edgetl/training/phases.py, edgetl/artifacts/resume.py) let the same command resume an interrupted training; the
output's lock (edgetl/artifacts/locking.py) is held throughout, so two processes never train into the same place.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.artifacts.locking import locked
from edgetl.artifacts.manifest import MANIFEST_NAME, Manifest, read_manifest, sha256_of, write_manifest
from edgetl.artifacts.resume import data_stamp, resume_dir
from edgetl.artifacts.staging import staged_directory
from edgetl.backbones import get_backbone, imagenet_provenance
from edgetl.data import dataset_index as dsi
from edgetl.data.pipeline import RESIZE_METHOD, check_images, make_dataset
from edgetl.errors import InputError, Interrupted, ResourceError, UsageError
from edgetl.network.model import (LABELS_FILE, MODEL_FILE, backbone_layers, build_classifier, copy_matching_weights,
                                  load_model, load_weights_file)
from edgetl.network.tasks import write_label_files
from edgetl.progress import say
from edgetl.tf_env import keras, tf, versions
from edgetl.network.heads import EMBEDDING_HEADS
from edgetl.training import constraints, multitask, siamese
from edgetl.training.config import TrainConfig
from edgetl.training.distribute import SINGLE_PROCESS, Distribution, float32_copy
from edgetl.training.learning_check import advice, learning_health
from edgetl.training.phases import BestWeights, PhaseData, Progress, fit_phase

IMBALANCE_RATIO = 10  # largest / smallest training class at which a warning suggests --class-weights


def run_training(config: TrainConfig) -> Manifest:
    if config.distribute == "none" and not config.mixed_precision:
        with locked(config.output):  # held throughout: one process per output and its resume checkpoint
            return _train(config)
    from edgetl.training import distribute

    dist = distribute.setup(config.distribute, config.batch_size, config.mixed_precision)  # before TF initializes
    if not dist.is_chief:
        say(f"worker {dist.cluster.task_index} of {dist.workers}: the chief writes {config.output}; this worker's "
            f"copy goes to a temporary directory that is removed")
    # A non-chief worker writes (run and lock) in a temporary directory; everything runs in the strategy's scope.
    with distribute.worker_output(config.output, dist) as output, locked(output), dist.scope(), \
            distribute.mixed_precision_policy(config.mixed_precision):
        return _train(config, dist, output)


def _train(config: TrainConfig, dist: Distribution = SINGLE_PROCESS, output: Path | None = None) -> Manifest:
    started = time.perf_counter()
    if dist.is_chief:
        _check_output(config)
    spec = get_backbone(config.backbone)
    image_size = config.resolved_image_size

    train_index, val_index, full = _load_data(config)
    say(f"data: {len(full.paths)} images, {len(full.classes)} classes, {len(full.skipped)} skipped; "
        f"train {len(train_index.paths)} / val {len(val_index.paths)}")
    class_weight = _class_weights(train_index, config.class_weights)

    keras().utils.set_random_seed(config.seed)
    model = build_classifier(spec, image_size, config.alpha, len(full.classes),
                             imagenet=config.weights == "imagenet", dropout=config.dropout, head=config.head,
                             tasks=multitask.class_counts(full))
    source = _load_source_weights(model, config)
    pretrained = config.weights != "none"
    # Before any resume: L2-SP anchors at the weights training started from, not at a checkpoint.
    constraints.add_weight_penalty(model, backbone_layers(model), config.regularizer, config.regularizer_strength)
    multipliers = (constraints.layer_multipliers(model, backbone_layers(model), config.layer_lr_decay)
                   if config.layer_lr_decay else None)

    def optimizer_for(schedule: Any) -> Any:
        return constraints.make_optimizer(schedule, config.clipnorm, multipliers)

    def dataset(index: dsi.DatasetIndex, training: bool, augment: bool = False) -> Any:
        return dist.shard(multitask.split_labels(make_dataset(
            index.paths, multitask.dataset_labels(index), image_size=image_size, batch_size=config.batch_size,
            preprocessing=spec.preprocessing, training=training, seed=config.seed, augment=augment,
            flip=config.flip), index.tasks))

    # Augmentation is for phases that train backbone layers. A frozen backbone cannot learn invariance from
    # it, and on the images as they are the head phase can run on cached features: on the digits at 10 images
    # per class, the head on augmented images reached 0.47 where the same head on clean features reached 0.74.
    val_images = dataset(val_index, False)
    data = PhaseData(dataset(train_index, True, config.augment), val_images,
                     dataset(train_index, False), class_weight,  # the third un-augmented, for BatchNorm statistics
                     multitask.loss_weights(config))
    head_data = dataclasses.replace(data, train=dataset(train_index, True)) if pretrained else data
    if config.head == "siamese":  # pairs of images instead of images (the validation pairs drawn once)
        def pairs(index: dsi.DatasetIndex, fresh: bool, augment: bool = False) -> Any:
            return siamese.image_pairs(index.paths, index.labels, image_size=image_size, batch_size=config.batch_size,
                                       preprocessing=spec.preprocessing, seed=config.seed, fresh=fresh,
                                       augment=augment, flip=config.flip)

        data = siamese.as_pairs(data, pairs(train_index, True, config.augment), pairs(val_index, False))
        head_data = siamese.as_pairs(data, pairs(train_index, True), data.val) if pretrained else data
    if config.epochs is None:
        config = dataclasses.replace(config, epochs=config.default_epochs(len(train_index.paths)))
    if config.fine_tune_epochs is None:
        config = dataclasses.replace(config, fine_tune_epochs=config.default_fine_tune_epochs(len(train_index.paths)))
    total = config.epochs + config.fine_tune_epochs
    identity = dist.identity(_identity(config, source, train_index, val_index), train_index, val_index)
    store = dist.checkpoint_store(resume_dir(config.output), identity)
    resumed = store.load()
    dist.check_agreement(identity, resumed.epoch if resumed else 0)
    # Workers must take the same checkpoint steps (reading weights can be a collective): no skipping there.
    progress = Progress(store, total, throttle=dist.workers == 1)
    if resumed:
        model.set_weights(resumed.weights)
        progress.restore(resumed)
        say(f"resuming from epoch {resumed.epoch} of {total} (checkpoint {store.directory})")
    layers = backbone_layers(model)
    cache_info: dict[str, Any] = {"used": False}
    phase_seconds: dict[str, float] = {}  # wall time of each phase trained by this process
    trained = model  # what the head phase fits (a head-only model, the siamese twin, or the model itself)
    try:
        if config.epochs and progress.done < config.epochs:
            # From scratch there is nothing to keep frozen: the first phase trains the whole network.
            for layer in layers:
                layer.trainable = not pretrained
            if not pretrained:
                say(f"from scratch (--weights none): training all {len(layers)} backbone layers with the head, "
                    f"BatchNorm trainable")
            phase_started = time.perf_counter()
            if config.uses_feature_cache:
                head_data, trained, cache_info = _cached_head(model, config, spec, image_size, head_data,
                                                              val_images, train_index, val_index)
            elif config.head == "siamese":
                trained = siamese.twin(model)
            elif pretrained:  # a model of its own sharing the layers, so the head's penalty stays in this phase
                trained = keras().Model(model.inputs, model.outputs, name=f"{model.name}_head_phase")
            if pretrained:  # the full model's losses (--regularizer) stay with it: the head phase's model
                constraints.add_weight_penalty(trained, [], config.regularizer, config.regularizer_strength, True)
                if config.head == "linear":  # the linear probe's objective; other heads keep their own
                    constraints.add_probe_penalty(trained, len(train_index.paths))
            fit_phase(model, head_data, progress, "head" if pretrained else "scratch", config.first_learning_rate, 0,
                      config.epochs,
                      resumed.optimizer if resumed and resumed.phase in ("head", "scratch") else None, optimizer_for,
                      trained)
            # extraction and checkpoints included
            phase_seconds["head" if pretrained else "scratch"] = round(time.perf_counter() - phase_started, 2)
        if config.fine_tune_epochs and progress.done < total:
            count = len(layers) if config.fine_tune_layers == "all" else min(config.fine_tune_layers, len(layers))
            for i, layer in enumerate(layers):
                is_bn = isinstance(layer, keras().layers.BatchNormalization)
                layer.trainable = i >= len(layers) - count and not (is_bn and pretrained)
            say(f"fine-tuning the top {count} of {len(layers)} backbone layers "
                f"(BatchNorm {'frozen in inference mode' if pretrained else 'trainable: no pretrained statistics'})")
            phase_started = time.perf_counter()
            twin = None
            if config.head == "siamese":  # the head phase's scorer goes on training (a fresh one after a resume)
                twin = siamese.twin(model, scorer=siamese.scorer_layer(trained))
            fit_phase(model, data, progress, "fine-tune", config.fine_tune_learning_rate, config.epochs,
                      config.fine_tune_epochs, resumed.optimizer if resumed and resumed.phase == "fine-tune" else None,
                      optimizer_for, twin, warmup=pretrained)  # warmup: pretrained features vs Adam's first steps
            phase_seconds["fine-tune"] = round(time.perf_counter() - phase_started, 2)
        best = progress.best
        model.set_weights(best.weights)
        similarity = None
        if config.head in EMBEDDING_HEADS:
            from edgetl.training import prototypes

            trained_embeddings = prototypes.set_from_training_images(model, data.calibration, len(full.classes))
            similarity = siamese.similarity_section(trained_embeddings, prototypes.embed_batches(model, val_images),
                                                    prototypes.prototypes_of(model), config.head)
        metrics = (multitask.evaluate(model, val_images, full, best.epoch) if full.tasks else
                   _evaluate(model, val_images, full.classes, best))
    except KeyboardInterrupt:
        raise Interrupted(progress.interrupted_message()) from None
    except tf().errors.ResourceExhaustedError as exc:
        raise ResourceError(f"--batch-size {config.batch_size}: out of memory while training "
                            f"({str(exc).strip().splitlines()[0][:200]}); try a smaller batch, "
                            f"e.g. --batch-size {max(1, config.batch_size // 2)}") from None
    except Exception as exc:  # multi-worker: a peer died; TensorFlow reports it as one of several errors
        lost = dist.lost_worker(exc)
        if lost is None:
            raise
        raise lost from None
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    metrics["phase_seconds"] = phase_seconds
    say(f"best epoch {best.epoch}: validation accuracy {metrics['val_accuracy']:.4f}")
    if metrics.get("learning", {}).get("warning"):
        say(f"warning: {metrics['learning']['warning']}; {advice(config.to_json())}")
    history = progress.history

    sections = {
        "backbone": spec.to_json(image_size, config.alpha) | {"resize": RESIZE_METHOD},
        "dataset": full.summary() | {
            "classes": list(full.classes),
            "split": ({"method": "val_dir", "val_dir": str(config.val_dir)} if config.val_dir else
                      {"method": "stratified", "val_split": config.val_split, "seed": config.seed}),
            "train_counts": train_index.counts(), "val_counts": val_index.counts(),
            "class_weights": class_weight and {full.classes[i]: w for i, w in class_weight.items()},
            "train_fingerprint": train_index.fingerprint(), "val_fingerprint": val_index.fingerprint()},
        "weights": source,
        "feature_cache": cache_info,
        **({"prototypes": {"from": "training images", "enrolled": []}} if config.head in EMBEDDING_HEADS else {}),
        **({"similarity": similarity} if similarity else {}),
        **multitask.run_sections(config, full, train_index, val_index),
        "distribute": dist.section(config.batch_size),
        "history": history,
    }
    manifest = Manifest(kind="run", files={}, options=config.to_json(),
                        metrics=metrics, versions=versions(), parent=source.get("parent"), sections=sections)
    if config.mixed_precision:  # exported files and runtimes expect float32 layers
        model = float32_copy(model)
    try:
        written = _write_run(config if output is None else dataclasses.replace(config, output=output),
                             model, full.classes, manifest)
    except KeyboardInterrupt:
        raise Interrupted(progress.interrupted_message()) from None
    store.clear()  # only once the run is in place: an interruption while writing still resumes
    return written


def _identity(config: TrainConfig, source: dict[str, Any], train: dsi.DatasetIndex,
              val: dsi.DatasetIndex) -> dict[str, Any]:
    """What decides the training's result; a checkpoint resumes only when all of it is unchanged."""
    options = {k: v for k, v in config.to_json().items() if k != "overwrite"}
    return {"options": options, "source": source, "train_fingerprint": train.fingerprint(),
            "val_fingerprint": val.fingerprint(), "data_stamp": data_stamp(list(train.paths) + list(val.paths))}


def _check_output(config: TrainConfig) -> None:
    out = config.output
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        what = "an edgetl run" if (out / MANIFEST_NAME).exists() else "a non-empty directory"
        raise UsageError(f"-o {out}: is {what}; choose another output or pass --overwrite")
    if out.resolve() == config.data.resolve() or config.data.resolve() in out.resolve().parents:
        raise UsageError(f"-o {out}: must not be inside DATA ({config.data})")


def _load_data(config: TrainConfig) -> tuple[dsi.DatasetIndex, dsi.DatasetIndex, dsi.DatasetIndex]:
    full = dsi.index_data(config.data, config.allow_outside_root, config.tasks)
    dsi.check_trainable(full)  # before decoding anything: fail fast on one class or no images
    val_full = dsi.index_folder(config.val_dir, classes=full.classes) if config.val_dir else None
    for entry in full.skipped + (val_full.skipped if val_full else ()):
        say(f"skipped {entry.path}: {entry.reason}")
    bad = check_images(full.paths + (val_full.paths if val_full else ()), config.on_bad_image)
    train_paths = set(full.paths)
    full = full.without({p: r for p, r in bad.items() if p in train_paths})
    dsi.check_trainable(full)
    if val_full is None:
        train, val = dsi.stratified_split(full, config.val_split, config.seed)
    else:
        val = val_full.without({p: r for p, r in bad.items() if p not in train_paths})
        train = full
        full = dataclasses.replace(full, skipped=full.skipped + val.skipped)
    if not val.paths:
        where = f"--val-dir {config.val_dir}" if config.val_dir else f"{config.data}"
        raise InputError(f"{where}: no validation images; add images or use --val-dir")
    return train, val, full


def _class_weights(train: dsi.DatasetIndex, mode: str) -> dict[int, float] | None:
    """Warn when classes are imbalanced; for "balanced", weights n / (classes * n_class) for model.fit."""
    counts = train.counts()
    if max(counts.values()) >= IMBALANCE_RATIO * min(counts.values()):
        listed = ", ".join(f"{name}: {n}" for name, n in counts.items())
        hint = "" if mode == "balanced" else "; consider --class-weights balanced"
        say(f"warning: imbalanced classes (training images {listed}){hint}")
    if mode != "balanced":
        return None
    total = sum(counts.values())
    return {i: round(total / (len(counts) * n), 4) for i, n in enumerate(counts.values()) if n}


def _load_source_weights(model: Any, config: TrainConfig) -> dict[str, Any]:
    """Apply --weights; return what was loaded (and the parent run, for chained transfer)."""
    if config.weights == "imagenet":
        return {"source": "imagenet", **imagenet_provenance(config.backbone)}
    if config.weights == "none":
        return {"source": "none"}
    path = Path(config.weights)
    if not path.exists():
        raise InputError(f"--weights {path}: no such file or directory; use imagenet, none, a .h5/.keras file "
                         f"or a previous run directory")
    layers = backbone_layers(model)
    if path.is_dir() and not (path / MANIFEST_NAME).exists() and list(path.glob("*.index")):
        return _load_official_checkpoint(model, config, path)
    if path.is_dir():
        parent = read_manifest(path)
        if parent.kind != "run":
            raise InputError(f"--weights {path}: is an edgetl {parent.kind}, not a run")
        source_backbone = parent.sections.get("backbone", {})
        if source_backbone.get("name") != config.backbone or source_backbone.get("alpha") != config.alpha:
            raise UsageError(f"--weights {path}: that run is {source_backbone.get('name')} alpha "
                             f"{source_backbone.get('alpha')}; train with the same --backbone and --alpha")
        loaded = copy_matching_weights(load_model(path / MODEL_FILE, config.trust_model), layers)
        parent_ref = {"path": str(path.resolve()), "manifest_sha256": sha256_of(path / MANIFEST_NAME)}
        result = {"source": "run", "path": str(path.resolve()), "layers_loaded": loaded, "parent": parent_ref}
    else:
        loaded = load_weights_file(model, path, config.trust_model)
        result = {"source": "file", "path": str(path.resolve()), "sha256": sha256_of(path), "layers_loaded": loaded}
    if loaded == 0:
        raise InputError(f"--weights {path}: no layer matches the {config.backbone} backbone by name and shape")
    weighted = sum(1 for layer in layers if layer.weights)
    say(f"loaded weights for {loaded} of {weighted} backbone layers from {path}")
    return result


def _load_official_checkpoint(model: Any, config: TrainConfig, path: Path) -> dict[str, Any]:
    """A published TF1 checkpoint directory (EfficientNet-Lite's efficientnet-liteN/), mapped by variable name."""
    from edgetl.backbones.checkpoints import load_official_checkpoint

    if not config.backbone.startswith("efficientnet_lite"):
        raise UsageError(f"--weights {path}: a TensorFlow checkpoint directory is only understood for "
                         f"efficientnet_lite0..4 (the official efficientnet-liteN checkpoints)")
    loaded = load_official_checkpoint(model, path, int(config.backbone[-1]))
    say(f"loaded the official checkpoint {path} into {loaded} layers")
    return {"source": "checkpoint", "path": str(path.resolve()), "layers_loaded": loaded}


def _cached_head(model: Any, config: TrainConfig, spec: Any, image_size: int, data: PhaseData, val_images: Any,
                 train_index: dsi.DatasetIndex, val_index: dsi.DatasetIndex) -> tuple[PhaseData, Any, dict[str, Any]]:
    """The head phase on cached backbone features: its data, the head-only model, and what was cached."""
    from edgetl.network.heads import CACHE_AFTER
    from edgetl.training import feature_cache

    cut = feature_cache.cut_tensor(model, CACHE_AFTER[config.head])
    extractor = keras().Model(model.input, cut, name="feature_extractor")
    identity = {"weights_sha256": feature_cache.weights_digest(extractor), "image_size": image_size,
                "preprocessing": spec.preprocessing.to_json(), "resize": RESIZE_METHOD,
                "cut": CACHE_AFTER[config.head] or "backbone_output"}
    splits = {name: feature_cache.cached_split(extractor, identity, index.paths, index.labels, images, name)
              for name, index, images in (("train", train_index, data.calibration), ("val", val_index, val_images))}
    cached = PhaseData(splits["train"].dataset(config.batch_size, True, config.seed),
                   splits["val"].dataset(config.batch_size, False, config.seed), data.calibration, data.class_weight)
    head = feature_cache.head_model(model, cut)
    if config.head == "siamese":
        train, val = splits["train"], splits["val"]
        cached = siamese.as_pairs(cached, siamese.feature_pairs(train.features, train.labels, config.batch_size,
                                                                config.seed, True),
                                  siamese.feature_pairs(val.features, val.labels, config.batch_size, config.seed,
                                                        False))
        head = siamese.twin(model, cut)
    info = {"used": True, "feature_shape": list(splits["train"].features.shape[1:]),
            **{f"{name}_hit": split.hit for name, split in splits.items()},
            "extract_seconds": round(sum(split.seconds for split in splits.values()), 2),
            "entries": [split.path.name for split in splits.values()]}
    return cached, head, info


def _evaluate(model: Any, val_ds: Any, classes: tuple[str, ...], best: BestWeights) -> dict[str, Any]:
    labels, predicted = [], []
    for images, batch_labels in val_ds:
        predicted.append(np.argmax(model(images, training=False).numpy(), axis=1))
        labels.append(batch_labels.numpy())
    y, p = np.concatenate(labels), np.concatenate(predicted)
    per_class = {name: (round(float(np.mean(p[y == i] == i)), 4) if np.any(y == i) else None)
                 for i, name in enumerate(classes)}
    return {"val_accuracy": round(float(np.mean(p == y)), 4), "val_images": int(len(y)),
            "best_epoch": best.epoch, "per_class_accuracy": per_class,
            "learning": learning_health(y, p, classes)}


def _write_run(config: TrainConfig, model: Any, classes: tuple[str, ...], manifest: Manifest) -> Manifest:
    with staged_directory(config.output) as staging:
        for layer in model.layers:  # a run is saved fully trainable; later stages choose what to freeze
            layer.trainable = True
        model.save(str(staging / MODEL_FILE))
        (staging / LABELS_FILE).write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")
        task_files = write_label_files(staging, manifest.sections)  # labels_<task>.txt, multi-task only
        written = write_manifest(staging, manifest, [MODEL_FILE, LABELS_FILE, *task_files])
    say(f"wrote {config.output}/ ({MODEL_FILE}, {LABELS_FILE}, {MANIFEST_NAME})")
    return written
