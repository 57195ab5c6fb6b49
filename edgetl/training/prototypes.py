"""Prototype classes for the few-shot head (`--head prototype`, edgetl/network/heads.py).

A class is the unit-length mean of its images' unit-length embeddings. After training, the learned
class weights are replaced by these means over the training images; `edgetl enroll` adds or
replaces a class from a few images the same way, without training. The prototypes are the kernel
of the model's `head_prototypes` layer, so an exported model classifies with them as a constant.
For apps that add classes on device, exports also carry the embedding model and the prototype table
(`prototypes.json`); an app embeds a few photos, averages and normalizes, appends the vector and a
label, and classifies by the largest dot product (see `how_to_add_a_class` in that file).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edgetl.errors import InputError, UsageError
from edgetl.network.heads import COSINE_SCALE, EMBEDDING_LAYER, PROTOTYPE_LAYER, cosine_classifier, embedding_model
from edgetl.progress import say
from edgetl.tf_env import keras

TABLE_FILE = "prototypes.json"
HOW_TO_ADD_A_CLASS = (
    "Run the embedding model on 1-5 photos of the new class (preprocessed like any input), average the "
    "embeddings, divide by the average's length, and append it to `vectors` with its name in `labels`. "
    "Classify an image by embedding it and taking the label whose vector has the largest dot product "
    "(probabilities: softmax of scale * dot products).")


def is_prototype_model(model: Any) -> bool:
    return any(layer.name == PROTOTYPE_LAYER for layer in model.layers)


def prototypes_of(model: Any) -> np.ndarray:
    """[classes, dim]: the model's prototype table."""
    return model.get_layer(PROTOTYPE_LAYER).get_weights()[0].T.copy()


def class_means(embeddings: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Unit-length mean embedding of each class; a class without images is an error."""
    table = np.zeros((num_classes, embeddings.shape[1]), np.float32)
    for c in range(num_classes):
        members = embeddings[labels == c]
        if not len(members):
            raise InputError(f"class {c} has no images to compute its prototype from")
        table[c] = unit(members.mean(axis=0))
    return table


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)


def embed_batches(model: Any, batches: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of (images, labels) batches."""
    embedder = embedding_model(model)
    pairs = [(embedder(images, training=False).numpy(), labels.numpy()) for images, labels in batches]
    return np.concatenate([e for e, _ in pairs]), np.concatenate([y for _, y in pairs])


def set_from_training_images(model: Any, batches: Iterable[Any], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Replace the learned class weights by the mean embeddings of the training images (un-augmented);
    returns those embeddings and labels."""
    embeddings, labels = embed_batches(model, batches)
    model.get_layer(PROTOTYPE_LAYER).set_weights([class_means(embeddings, labels, num_classes).T])
    say(f"prototypes: mean normalized embeddings of {len(labels)} training images, {num_classes} classes")
    return embeddings, labels


def with_prototypes(model: Any, table: np.ndarray) -> Any:
    """The classifier with `table` as its classes (any number): a new top on the same embedding layers."""
    probs = cosine_classifier(model.get_layer(EMBEDDING_LAYER).output, len(table))
    rebuilt = keras().Model(model.input, probs, name=model.name)
    rebuilt.get_layer(PROTOTYPE_LAYER).set_weights([np.ascontiguousarray(table.T)])
    return rebuilt


def table_json(model: Any, labels: list[str]) -> dict[str, Any]:
    table = prototypes_of(model)
    return {"labels": labels, "scale": COSINE_SCALE, "dim": int(table.shape[1]),
            "vectors": [[round(float(v), 7) for v in row] for row in table],
            "how_to_add_a_class": HOW_TO_ADD_A_CLASS}


def enroll(run_path: str | Path, class_name: str, image_paths: list[str]) -> Any:
    """Add class `class_name` to the prototype run RUN (or replace its prototype) from a few images."""
    from edgetl.artifacts.locking import locked

    with locked(Path(run_path)):
        return _enroll(Path(run_path), class_name, image_paths)


def _enroll(run_path: Path, class_name: str, image_paths: list[str]) -> Any:
    import dataclasses

    from edgetl.artifacts.manifest import sha256_of, write_manifest
    from edgetl.artifacts.run_dir import Run, load_images
    from edgetl.data.pipeline import find_unreadable
    from edgetl.network.model import LABELS_FILE, MODEL_FILE

    name = class_name.strip()
    if not name or any(ch in name for ch in "\n\r\t"):
        raise UsageError(f"--class {class_name!r}: give a non-empty name on one line")
    if not image_paths:
        raise UsageError("enroll: give 1 or more image files of the class")
    missing = [p for p in image_paths if not Path(p).is_file()]
    bad = find_unreadable([p for p in image_paths if p not in missing])
    if missing or bad:
        listed = [f"{p}: no such file" for p in missing] + [f"{p}: {why}" for p, why in sorted(bad.items())]
        raise InputError(f"enroll: {len(listed)} image(s) cannot be used: {'; '.join(listed[:5])}")
    run = Run.open(run_path)
    model = run.model
    if not is_prototype_model(model):
        raise UsageError(f"{run_path}: enroll needs a run trained with --head prototype "
                         f"(this run's head is {run.manifest.options.get('head', 'linear')})")
    embeddings = embedding_model(model)(load_images(list(image_paths), run.image_size, run.preprocessing),
                                        training=False).numpy()
    prototype = unit(embeddings.mean(axis=0))
    labels, table = run.labels, prototypes_of(model)
    replaced = name in labels
    if replaced:
        table[labels.index(name)] = prototype
    else:
        labels, table = labels + [name], np.vstack([table, prototype[None]])
    enrolled = with_prototypes(model, table)
    record = {"class": name, "images": [{"path": str(Path(p).resolve()), "sha256": sha256_of(Path(p))}
                                        for p in image_paths], "replaced": replaced}
    sections = dict(run.manifest.sections)
    sections["prototypes"] = dict(sections.get("prototypes", {}))
    sections["prototypes"]["enrolled"] = list(sections["prototypes"].get("enrolled", [])) + [record]
    sections["dataset"] = dict(sections["dataset"]) | {"classes": labels}
    # New files beside the old ones, renamed over them, manifest last: until the manifest is
    # rewritten the run fails its hash check instead of looking valid with a half-updated model.
    staged_model, staged_labels = run_path / f".enroll.{MODEL_FILE}", run_path / f".enroll.{LABELS_FILE}"
    try:
        enrolled.save(str(staged_model))
        staged_labels.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
        staged_model.replace(run_path / MODEL_FILE)
        staged_labels.replace(run_path / LABELS_FILE)
    finally:
        for leftover in (staged_model, staged_labels):
            leftover.unlink(missing_ok=True)
    manifest = dataclasses.replace(run.manifest, sections=sections, created=None)
    written = write_manifest(run_path, manifest, [MODEL_FILE, LABELS_FILE])
    similarity = float(max(np.delete(table, labels.index(name), axis=0) @ prototype, default=0.0))
    say(f"{'replaced' if replaced else 'added'} class {name!r} from {len(image_paths)} image(s); "
        f"{len(labels)} classes; closest other class at cosine {similarity:.3f}")
    return written, {"class": name, "replaced": replaced, "classes": len(labels),
                     "closest_cosine": round(similarity, 4),
                     "images_sha256": hashlib.sha256("".join(r["sha256"] for r in record["images"]).encode()).hexdigest()}


FLOAT_MIN_COSINE = 0.999  # a float embedding file matches Keras; quantized ones are checked by what they decide
QUANTIZED_MEAN_COSINE = 0.99  # a quantized embedding file: mean cosine to the Keras embedding
MIN_DECISION_AGREEMENT = 0.99  # same/different decisions on pairs of the verify images, at the run's threshold


def export_embedding(converter: Any, source: Any, options: Any, directory: Path, images: np.ndarray,
                     similarity: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the embedding model (same format and mode) and prototypes.json into an artifact folder,
    and check the embedding file against Keras on `images`: for float files every embedding, for
    quantized ones the mean cosine, the class each embedding picks from the table (top-1 agreement, as
    for the classifier) and the same/different decision on every pair of the images at the run's
    calibrated threshold (below QUANTIZED_MEAN_COSINE / MIN_DECISION_AGREEMENT: a warning). Returns the
    facts for the manifest, with `problems` (the file is wrong) and
    `numeric_problems` (a quantized file's accuracy shortfalls) for the exporter's verdict."""
    import dataclasses
    import json

    from edgetl.network.similarity import Scorer
    from edgetl.runner.verification import TOLERANCES
    from edgetl.targets import open_session

    name = f"embedding{converter.suffix}"
    embedder = embedding_model(source.model)
    converter.convert(dataclasses.replace(source, model=embedder), options, directory / name)
    table_doc = table_json(source.model, source.labels) | ({"similarity": similarity_json(similarity)}
                                                           if similarity else {})
    (directory / TABLE_FILE).write_text(json.dumps(table_doc, indent=1), encoding="utf-8")
    expected = embedder(images, training=False).numpy()
    feed = images.transpose(0, 3, 1, 2) if getattr(options, "nchw", False) else images
    got = open_session(directory / name).predict(np.ascontiguousarray(feed)).reshape(expected.shape)
    cosines = np.sum(expected * got, axis=1) / np.maximum(np.linalg.norm(got, axis=1), 1e-12)
    table = prototypes_of(source.model)
    agreement = float(np.mean((expected @ table.T).argmax(axis=1) == (got @ table.T).argmax(axis=1)))
    facts = {"embedding_file": name, "table_file": TABLE_FILE, "classes": len(source.labels), "images": len(images),
             "embedding_min_cosine": round(float(cosines.min()), 5),
             "embedding_mean_cosine": round(float(cosines.mean()), 5), "top1_agreement": round(agreement, 4)}
    # problems: the file is wrong; numeric: the classes it picks drift past the mode's tolerance (compress gates
    # those itself); warnings: a quantized embedding below the verification bars (recorded, said, not refused:
    # the 2-class test model's int8 embedding had mean cosine 0.94 and still classified every image the same).
    problems, numeric, warnings = [], [], []
    if similarity and "pairs" in similarity and len(images) > 1:
        scorer, threshold = Scorer.from_json(similarity["scorer"]), similarity["pairs"]["threshold"]
        first, second = np.triu_indices(len(images), k=1)
        decided = [scorer.score(e[first], e[second]) >= threshold for e in (expected, got)]
        facts["decision_agreement"] = round(float(np.mean(decided[0] == decided[1])), 5)
        facts["decision_pairs"] = int(len(first))
        if facts["decision_agreement"] < MIN_DECISION_AGREEMENT:
            (warnings if options.quantize != "none" else problems).append(
                f"same/different decisions agree with the Keras model's on {facts['decision_agreement']:.4f}"
                f" of {len(first)} pairs (< {MIN_DECISION_AGREEMENT})")
    if options.quantize == "none" and facts["embedding_min_cosine"] < FLOAT_MIN_COSINE:
        problems.append(f"embeddings differ from the Keras model's (min cosine {cosines.min():.5f} < "
                        f"{FLOAT_MIN_COSINE} on {len(images)} images)")
    if options.quantize != "none" and facts["embedding_mean_cosine"] < QUANTIZED_MEAN_COSINE:
        warnings.append(f"embeddings drift from the Keras model's (mean cosine {cosines.mean():.5f} < "
                        f"{QUANTIZED_MEAN_COSINE} on {len(images)} images)")
    floor = TOLERANCES[options.quantize].get("min_agreement", 1.0)
    if agreement < floor:
        numeric.append(f"classes picked by its embeddings agree with the Keras model's on {agreement:.3f} of "
                       f"{len(images)} images (< {floor})")
    if warnings:
        facts["warnings"] = [f"{name}: {w}; for verification apps prefer --quantize fp16 or dynamic" for w in warnings]
        for warning in facts["warnings"]:
            say(f"warning: {warning}")
    return facts | {"problems": [f"{name}: {p}" for p in problems],
                    "numeric_problems": [f"{name}: {p}" for p in numeric]}


def similarity_json(similarity: dict[str, Any]) -> dict[str, Any]:
    """What an app needs from the run's calibration: the scorer, the thresholds and what they mean."""
    doc: dict[str, Any] = {"scorer": similarity["scorer"]}
    if "pairs" in similarity:
        pairs = similarity["pairs"]
        doc["verify"] = {"threshold": pairs["threshold"], "far": pairs["far_target"], "tar": pairs["tar"],
                         "rule": "same when score(embedding_a, embedding_b) >= threshold"}
    if "unknown" in similarity:
        unknown = similarity["unknown"]
        doc["unknown"] = {"threshold": unknown["threshold"], "far": unknown["far_target"],
                          "known_accepted": unknown["known_accepted"], "rule": unknown["rule"]}
    return doc
