"""`edgetl evaluate`: the standard few-shot protocol on classes the model never saw.

N-way K-shot episodes (Vinyals et al. 2016; Snell et al. 2017): pick N classes of DATA at random, K support
images of each and up to Q query images; each class is the unit-length mean of its support embeddings and
each query goes to the class it scores highest against (the run's scorer). An episode's accuracy is the share
of queries right; the result is the mean over the episodes with its 95 % confidence interval
(1.96 x std / sqrt(episodes)). Verification on pairs of the same images gives ROC AUC and EER, and the
run's calibrated threshold is checked there: the FAR it was set for against the FAR it gets on new classes.

The same episodes (same seed) run on the raw ImageNet features of the same backbone (average-pooled, no
training on the user's data): what training bought, as a paired difference with its own interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import UsageError
from edgetl.network.similarity import COSINE, Scorer, calibrate_pairs, normalized, operating_point, sample_pairs
from edgetl.progress import say
from edgetl.runner.oneshot import Embedder, open_embedder

Z95 = 1.96


def evaluate(path: str | Path, data: str | Path, way: int = 5, shot: int = 1, queries: int = 15,
             episodes: int = 600, seed: int = 0, baseline: bool = True) -> dict[str, Any]:
    from edgetl.data import dataset_index as dsi
    from edgetl.data.pipeline import check_images

    for name, value, low in (("--way", way, 2), ("--shot", shot, 1), ("--queries", queries, 1),
                             ("--episodes", episodes, 1)):
        if value < low:
            raise UsageError(f"{name} {value}: must be at least {low}")
    embedder = open_embedder(path)
    index = dsi.index_folder(Path(data))
    index = index.without(check_images(index.paths, "skip"))
    labels = np.asarray(index.labels)
    eligible = [c for c in range(len(index.classes)) if np.sum(labels == c) >= shot + 1]
    if len(eligible) < way:
        raise UsageError(f"--data {data}: {len(eligible)} class(es) with at least {shot + 1} images "
                         f"(--shot {shot} + 1 query); {way}-way episodes need {way}: lower --way or add classes")
    seen = sorted(set(index.classes) & set(embedder.run_classes))
    if seen:
        say(f"warning: {len(seen)} of DATA's classes were in training ({', '.join(seen[:5])}): the numbers are "
            f"not about unseen classes")
    plan = draw_episodes(labels, eligible, way, shot, queries, episodes, seed)
    say(f"evaluate: {episodes} episodes, {way}-way {shot}-shot, up to {queries} queries per class, on "
        f"{len(index.paths)} images of {len(index.classes)} classes")
    embeddings = embedder.embed(list(index.paths), checked=True)  # check_images above decoded every file
    result = {"data": str(Path(data).resolve()), "way": way, "shot": shot, "queries": queries, "episodes": episodes,
              "seed": seed, "classes": len(index.classes), "images": len(index.paths), "classes_seen_in_training": seen,
              "model": _measure(embeddings, labels, plan, embedder.scorer, embedder) | {"path": str(embedder.path)}}
    if baseline:
        result["imagenet_features"] = _baseline(embedder, list(index.paths), labels, plan)
        raw = result["imagenet_features"]
        if "accuracy" in raw:
            result["gain"] = _paired_gain(result["model"].pop("_episodes"), raw.pop("_episodes"))
    result["model"].pop("_episodes", None)
    return result


def draw_episodes(labels: np.ndarray, eligible: list[int], way: int, shot: int, queries: int, episodes: int,
                  seed: int) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Per episode: per class, (support indices, query indices)."""
    rng = np.random.default_rng(seed)
    plan = []
    for _ in range(episodes):
        support, query = [], []
        for c in rng.choice(eligible, way, replace=False):
            members = rng.permutation(np.flatnonzero(labels == c))
            support.append(members[:shot])
            query.append(members[shot:shot + queries])
        plan.append((support, query))
    return plan


def episode_accuracies(embeddings: np.ndarray, plan: list[Any], scorer: Scorer) -> np.ndarray:
    accuracies = np.empty(len(plan))
    for e, (support, query) in enumerate(plan):
        prototypes = normalized(np.stack([embeddings[s].mean(axis=0) for s in support]))
        picked = [scorer.matrix(embeddings[q], prototypes).argmax(axis=1) for q in query]
        accuracies[e] = np.mean(np.concatenate([p == c for c, p in enumerate(picked)]))
    return accuracies


def _measure(embeddings: np.ndarray, labels: np.ndarray, plan: list[Any], scorer: Scorer,
             embedder: Embedder | None) -> dict[str, Any]:
    accuracies = episode_accuracies(embeddings, plan, scorer)
    pairs = calibrate_pairs(embeddings, labels, scorer)
    doc = {"accuracy": round(float(accuracies.mean()), 4), "ci95": round(_ci(accuracies), 4), "scorer": scorer.kind,
           "roc_auc": pairs["roc_auc"], "eer": pairs["eer"], "_episodes": accuracies}
    if embedder is not None and embedder.similarity and "pairs" in embedder.similarity:
        calibrated = embedder.similarity["pairs"]
        same, different = sample_pairs(labels)
        genuine = scorer.score(embeddings[same[:, 0]], embeddings[same[:, 1]])
        impostor = scorer.score(embeddings[different[:, 0]], embeddings[different[:, 1]])
        doc["at_run_threshold"] = {"threshold": calibrated["threshold"], "far_target": calibrated["far_target"],
                                   "far": round(float(np.mean(impostor >= calibrated["threshold"])), 5),
                                   "tar": round(float(np.mean(genuine >= calibrated["threshold"])), 5)}
        doc["at_far_here"] = {k: v for k, v in operating_point(genuine, impostor, calibrated["far_target"]).items()
                              if k in ("threshold", "far", "tar")}
    return doc


def _baseline(embedder: Embedder, paths: list[str], labels: np.ndarray, plan: list[Any]) -> dict[str, Any]:
    """The same episodes on the backbone's ImageNet features, average-pooled (cosine)."""
    from edgetl.backbones import get_backbone
    from edgetl.network.heads import embedding_model
    from edgetl.network.model import build_classifier

    from edgetl.backbones.lite_imagenet import offline_backbones

    backbone = embedder.backbone
    if embedder.started_from != "imagenet" and backbone["name"] not in offline_backbones():
        # Only a run that asked for ImageNet weights may download them (no network the user did not ask for).
        reason = (f"{backbone['name']} ImageNet weights are not installed and this model did not start from them; "
                  f"the baseline would download them")
        say(f"imagenet features baseline skipped: {reason}")
        return {"skipped": reason}
    try:
        model = build_classifier(get_backbone(backbone["name"]), embedder.image_size, backbone.get("alpha", 1.0), 2,
                                 imagenet=True, dropout=0.0, head="linear")
    except Exception as exc:  # offline without cached weights, or a backbone without published weights
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        say(f"imagenet features baseline skipped: {reason}")
        return {"skipped": reason}
    features = embedding_model(model)
    raw = Embedder(embedder.path, embedder.image_size, embedder.preprocessing, None, [], None, backbone,
                   [], "imagenet", lambda images: features(images, training=False).numpy())
    return _measure(raw.embed(paths, checked=True), labels, plan, COSINE, None) | {"backbone": backbone["name"]}


def _paired_gain(model: np.ndarray, baseline: np.ndarray) -> dict[str, Any]:
    difference = model - baseline
    return {"accuracy_points": round(float(difference.mean()) * 100, 2), "ci95_points": round(_ci(difference) * 100, 2)}


def _ci(values: np.ndarray) -> float:
    return float(Z95 * values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def render_text(result: dict[str, Any]) -> str:
    def row(name: str, doc: dict[str, Any]) -> str:
        if "accuracy" not in doc:
            return f"{name:<18} skipped: {doc.get('skipped')}"
        return (f"{name:<18} {doc['accuracy']:.4f} +/- {doc['ci95']:.4f}   ROC AUC {doc['roc_auc']:.4f}   "
                f"EER {doc['eer']:.4f}")

    lines = [f"{result['way']}-way {result['shot']}-shot, {result['episodes']} episodes on {result['classes']} "
             f"classes ({result['images']} images) of {result['data']}:",
             row("model", result["model"])]
    if "imagenet_features" in result:
        lines.append(row("imagenet features", result["imagenet_features"]))
    if "gain" in result:
        gain = result["gain"]
        lines.append(f"training bought {gain['accuracy_points']:+.2f} +/- {gain['ci95_points']:.2f} points of accuracy")
    at = result["model"].get("at_run_threshold")
    if at:
        lines.append(f"the run's threshold {at['threshold']:.4f} (set for FAR {at['far_target']:g}) gives FAR "
                     f"{at['far']:.4f}, TAR {at['tar']:.4f} on these classes")
    return "\n".join(lines)
