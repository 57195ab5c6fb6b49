"""`edgetl verify` and `edgetl calibrate`: are two images the same thing, and where the line is drawn.

Both work on an embedding: a run's (the prototype and siamese heads' unit-length embedding, or the pooled
backbone features of any other head) or an exported embedding file (the `embedding.tflite|.onnx` an
artifact of a prototype or siamese run carries, with its `prototypes.json`). The score and threshold come
from the run's `similarity` section (edgetl/network/similarity.py): calibrated at the end of training on
validation pairs, re-calibrated by `edgetl calibrate RUN [--data DIR] [--far F]`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgetl.artifacts.manifest import Manifest, read_manifest, write_manifest
from edgetl.artifacts.run_dir import Run, load_images
from edgetl.backbones.spec import Preprocessing
from edgetl.errors import InputError, UsageError
from edgetl.network.similarity import COSINE, DEFAULT_FAR, Scorer, calibrate_pairs, normalized, unknown_rejection
from edgetl.progress import say


@dataclasses.dataclass
class Embedder:
    """Images in, embeddings out, with what the run calibrated."""
    path: Path
    image_size: int
    preprocessing: Preprocessing
    similarity: dict[str, Any] | None  # {"scorer", "pairs", "unknown", ...}
    labels: list[str]
    prototypes: np.ndarray | None
    backbone: dict[str, Any]
    run_classes: list[str]  # the classes the model was trained on
    started_from: str | None  # the run's --weights (None for an exported file)
    embed_images: Callable[[np.ndarray], np.ndarray]

    @property
    def scorer(self) -> Scorer:
        return Scorer.from_json(self.similarity["scorer"]) if self.similarity else COSINE

    def embed(self, paths: list[str], checked: bool = False) -> np.ndarray:
        """Unit-length embeddings of image files; `checked`: the caller already dropped unreadable ones."""
        if not checked:
            check_readable(paths)
        out = []
        for start in range(0, len(paths), 256):
            images = load_images(paths[start:start + 256], self.image_size, self.preprocessing)
            out.append(normalized(self.embed_images(images)))
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def check_readable(paths: list[str]) -> None:
    from edgetl.data.pipeline import find_unreadable

    missing = [p for p in paths if not Path(p).is_file()]
    bad = find_unreadable([p for p in paths if p not in missing])
    listed = [f"{p}: no such file" for p in missing] + [f"{p}: {why}" for p, why in sorted(bad.items())]
    if listed:
        raise InputError(f"{listed[0]}" + (f" (and {len(listed) - 1} more)" if len(listed) > 1 else ""))


def open_embedder(path: str | Path) -> Embedder:
    """A run directory, an artifact directory with an embedding file, or that file itself."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    manifest = read_manifest(folder)
    if manifest.kind == "run":
        return _run_embedder(Run.open(folder))
    if manifest.kind == "artifact":
        return _artifact_embedder(folder, manifest)
    raise InputError(f"{path}: is an edgetl {manifest.kind}; give a run, or an artifact folder with an embedding file")


def _run_embedder(run: Run) -> Embedder:
    from edgetl.network.heads import PROTOTYPE_LAYER, embedding_model

    model = run.model
    embedder = embedding_model(model)
    names = {layer.name for layer in model.layers}
    table = model.get_layer(PROTOTYPE_LAYER).get_weights()[0].T.copy() if PROTOTYPE_LAYER in names else None
    return Embedder(run.path, run.image_size, run.preprocessing, run.manifest.sections.get("similarity"),
                    run.labels, table, run.manifest.sections["backbone"], run.labels,
                    run.manifest.options.get("weights"), lambda images: embedder(images, training=False).numpy())


def _artifact_embedder(folder: Path, manifest: Manifest) -> Embedder:
    from edgetl.targets import open_session

    facts = manifest.sections.get("prototypes")
    if not facts:
        raise UsageError(f"{folder}: this artifact has no embedding file (only prototype and siamese runs export "
                         f"one); give the run, or export a run trained with --head prototype or siamese")
    table = json.loads((folder / facts["table_file"]).read_text(encoding="utf-8"))
    session = open_session(folder / facts["embedding_file"])
    nchw = bool(manifest.options.get("nchw"))

    def embed(images: np.ndarray) -> np.ndarray:
        feed = np.ascontiguousarray(images.transpose(0, 3, 1, 2) if nchw else images)
        return np.asarray(session.predict(feed), np.float32).reshape(len(images), -1)

    backbone = manifest.sections["backbone"]
    preprocessing = Preprocessing(mean=tuple(backbone["preprocessing"]["mean"]),
                                  std=tuple(backbone["preprocessing"]["std"]))
    similarity = _from_table(table.get("similarity"))
    return Embedder(folder, int(backbone["image_size"]), preprocessing, similarity,
                    table["labels"], np.asarray(table["vectors"], np.float32), backbone,
                    list(manifest.sections.get("labels", table["labels"])), None, embed)


def _from_table(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """prototypes.json's `similarity` (edgetl/training/prototypes.py) in the run section's shape."""
    if not doc:
        return None
    found: dict[str, Any] = {"scorer": doc["scorer"]}
    if "verify" in doc:
        found["pairs"] = {"threshold": doc["verify"]["threshold"], "far_target": doc["verify"]["far"],
                          "tar": doc["verify"]["tar"]}
    if "unknown" in doc:
        found["unknown"] = {"threshold": doc["unknown"]["threshold"], "far_target": doc["unknown"]["far"]}
    return found


def classify(path: str | Path, images: list[str]) -> list[dict[str, Any]]:
    """Each image's class by the best cosine to the prototypes, or "unknown" below the calibrated threshold."""
    embedder = open_embedder(path)
    if embedder.prototypes is None:
        raise UsageError(f"{path}: classify needs a run trained with --head prototype or siamese (or its exported "
                         f"embedding file); other runs classify with their exported model")
    unknown = (embedder.similarity or {}).get("unknown")
    cosines = embedder.embed(list(images)) @ normalized(embedder.prototypes).T
    results = []
    for image, row in zip(images, cosines):
        best = int(row.argmax())
        known = unknown is None or row[best] >= unknown["threshold"]
        results.append({"image": str(image), "label": embedder.labels[best] if known else "unknown",
                        "nearest": embedder.labels[best], "cosine": round(float(row[best]), 6),
                        "unknown_threshold": unknown and unknown["threshold"]})
    return results


def verify(path: str | Path, first: str, second: str) -> dict[str, Any]:
    """Score two image files and decide same/different at the calibrated threshold."""
    embedder = open_embedder(path)
    if not embedder.similarity or "pairs" not in embedder.similarity:
        raise UsageError(f"{path}: no calibrated threshold; train with --head prototype or siamese, or calibrate "
                         f"this run on labelled images: edgetl calibrate RUN --data DIR")
    a, b = embedder.embed([first, second])
    point = embedder.similarity["pairs"]
    score = float(embedder.scorer.score(a, b))
    return {"first": str(first), "second": str(second), "score": round(score, 6), "threshold": point["threshold"],
            "same": bool(score >= point["threshold"]), "scorer": embedder.scorer.kind,
            "far": point["far_target"], "tar": point["tar"], "model": str(embedder.path)}


def calibrate(run_path: str | Path, data: str | Path | None = None, far: float = DEFAULT_FAR,
              seed: int = 0) -> tuple[Manifest, dict[str, Any]]:
    """Re-calibrate the run's verification threshold (and unknown-class threshold) at `far` on labelled
    images: DATA's class folders, or the run's validation split. Rewrites the manifest's `similarity`."""
    from edgetl.artifacts.locking import locked

    if not 0 < far < 1:
        raise UsageError(f"--far {far}: must be between 0 and 1 (e.g. 0.01: 1 % of different pairs accepted)")
    with locked(Path(run_path)):
        run = Run.open(run_path)
        embedder = _run_embedder(run)
        paths, labels, names, source = _calibration_images(run, data)
        embeddings = embedder.embed(paths, checked=True)  # _calibration_images dropped unreadable files
        section = {"scorer": embedder.scorer.to_json(),
                   "pairs": calibrate_pairs(embeddings, np.asarray(labels), embedder.scorer, far, seed),
                   "calibrated_on": source}
        old = run.manifest.sections.get("similarity") or {}
        known = [(e, run.labels.index(name)) for e, name in zip(embeddings, names)
                 if name in run.labels]
        unseen = [e for e, name in zip(embeddings, names) if name not in run.labels]  # real unknowns
        if embedder.prototypes is not None and known:
            section["unknown"] = unknown_rejection(np.stack([e for e, _ in known]), np.array([c for _, c in known]),
                                                   embedder.prototypes, far,
                                                   unknown=np.stack(unseen) if unseen else None)
            section["unknown"]["calibrated_on"] = source
        elif old.get("unknown"):
            section["unknown"] = old["unknown"]  # no image of the run's classes here: the old threshold stays
        sections = dict(run.manifest.sections) | {"similarity": section}
        manifest = dataclasses.replace(run.manifest, sections=sections, created=None)
        written = write_manifest(run.path, manifest, list(run.manifest.files))
    point = section["pairs"]
    say(f"calibrated on {source}: ROC AUC {point['roc_auc']:.4f}, EER {point['eer']:.4f}; threshold "
        f"{point['threshold']:.4f} at FAR {far:g} accepts {point['tar']:.1%} of same-class pairs; re-export to "
        f"carry it into exported files")
    return written, section


def _calibration_images(run: Run, data: str | Path | None) -> tuple[list[str], list[int], list[str], str]:
    """Paths, labels, class names and where they come from: DATA's class folders or the run's validation split."""
    if data is None:
        val = run.splits[1]
        return list(val.paths), list(val.labels), [run.labels[c] for c in val.labels], "validation split"
    from edgetl.data import dataset_index as dsi
    from edgetl.data.pipeline import check_images

    index = dsi.index_folder(Path(data))
    bad = check_images(index.paths, "skip")
    index = index.without(bad)
    for path, why in sorted(bad.items()):
        say(f"skipped {path}: {why}")
    return (list(index.paths), list(index.labels), [index.classes[c] for c in index.labels],
            str(Path(data).resolve()))
