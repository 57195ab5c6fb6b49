"""How similar two embeddings are, and where to draw the line: the verification scorers and their calibration.

Two scorers, one per embedding head (edgetl/network/heads.py):
- `cosine` (prototype head): the dot product of the unit-length embeddings, in [-1, 1].
- `weighted_l1` (siamese head; Koch, Zemel and Salakhutdinov 2015): sigmoid(w . |a - b| + bias), in (0, 1),
  a learned weight per embedding dimension.
Either way a higher score means "more alike", and two images are the same thing when score >= threshold.

The threshold is calibrated on pairs of labelled images at a false accept rate (FAR) the user picks: the
smallest threshold at which at most FAR of the different-class pairs are accepted. The calibration also
reports what it costs: ROC AUC, the equal error rate and the true accept rate (TAR) at that threshold.
Unknown-class rejection uses the same rule on the best cosine to the class prototypes: an image whose
class is not enrolled is simulated by leaving its own class out (`unknown_rejection`).
Numpy only: training, `edgetl calibrate`, `evaluate`, the exporter and the bundle clients compute the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from edgetl.errors import InputError

DEFAULT_FAR = 0.01
MAX_PAIRS = 20_000  # per kind (same / different); enough to read a FAR of 0.01 to a few tenths of a point


@dataclasses.dataclass(frozen=True)
class Scorer:
    kind: str  # "cosine" | "weighted_l1"
    weights: tuple[float, ...] = ()
    bias: float = 0.0

    def score(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row i of `a` against row i of `b` (broadcasting: one row against many works too)."""
        a, b = normalized(a), normalized(b)
        if self.kind == "cosine":
            return np.sum(a * b, axis=-1)
        logits = np.abs(a - b) @ np.asarray(self.weights, np.float32) + self.bias
        return 1.0 / (1.0 + np.exp(-logits))

    def matrix(self, queries: np.ndarray, references: np.ndarray) -> np.ndarray:
        """[queries, references] scores."""
        return np.stack([self.score(queries, ref[None]) for ref in references], axis=1)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind}
        if self.kind == "weighted_l1":
            doc |= {"weights": [round(float(w), 7) for w in self.weights], "bias": round(float(self.bias), 7),
                    "formula": "1 / (1 + exp(-(sum_i weights[i] * |a_i - b_i| + bias))), a and b unit-length"}
        else:
            doc["formula"] = "sum_i a_i * b_i, a and b unit-length"
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Scorer":
        return cls(doc["kind"], tuple(doc.get("weights", ())), float(doc.get("bias", 0.0)))


COSINE = Scorer("cosine")


def normalized(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def sample_pairs(labels: np.ndarray, seed: int = 0, max_pairs: int = MAX_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """([n, 2] same-class index pairs, [m, 2] different-class pairs): every pair when there are at most
    `max_pairs` of a kind, else a random sample of that many."""
    labels = np.asarray(labels)
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    rng = np.random.default_rng(seed)
    picked = []
    for mask in (same, ~same):
        rows = np.flatnonzero(mask)
        if len(rows) > max_pairs:
            rows = np.sort(rng.choice(rows, max_pairs, replace=False))
        picked.append(np.stack([i[rows], j[rows]], axis=1))
    return picked[0], picked[1]


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """P(a same-class pair scores above a different-class pair), ties counting half (Mann-Whitney)."""
    ordered = np.sort(impostor)
    below = np.searchsorted(ordered, genuine, side="left")
    not_above = np.searchsorted(ordered, genuine, side="right")
    return float(np.mean((below + not_above) / 2.0) / len(ordered))


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Where false accepts (different pairs >= t) and false rejects (same pairs < t) are equal."""
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    far = 1.0 - np.searchsorted(np.sort(impostor), thresholds, side="left") / len(impostor)
    frr = np.searchsorted(np.sort(genuine), thresholds, side="left") / len(genuine)
    best = int(np.argmin(np.abs(far - frr)))
    return float((far[best] + frr[best]) / 2.0)


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The smallest threshold that accepts at most `far` of the different-class pairs (score >= threshold)."""
    ordered = np.sort(impostor)[::-1]
    allowed = int(np.floor(far * len(ordered)))
    if allowed >= len(ordered):
        return float(ordered[-1])
    return float(np.nextafter(np.float32(ordered[allowed]), np.float32(np.inf)))


def operating_point(genuine: np.ndarray, impostor: np.ndarray, far: float) -> dict[str, Any]:
    """Threshold at `far` and what it gives: the measured FAR and TAR, ROC AUC and EER."""
    if not len(genuine) or not len(impostor):
        raise InputError("calibration needs same-class and different-class pairs: at least 2 classes, "
                         "one of them with 2 or more images")
    threshold = threshold_at_far(impostor, far)
    doc = {"far_target": far, "threshold": threshold,
           "far": round(float(np.mean(impostor >= threshold)), 5),
           "tar": round(float(np.mean(genuine >= threshold)), 5),
           "roc_auc": round(roc_auc(genuine, impostor), 5), "eer": round(equal_error_rate(genuine, impostor), 5),
           "pairs": {"same": int(len(genuine)), "different": int(len(impostor))}}
    if len(impostor) * far < 10:
        doc["warning"] = (f"only {len(impostor)} different-class pairs: a FAR of {far:g} rests on fewer than 10 "
                          f"of them; calibrate on more images (`edgetl calibrate RUN --data DIR`)")
    return doc


def calibrate_pairs(embeddings: np.ndarray, labels: np.ndarray, scorer: Scorer, far: float = DEFAULT_FAR,
                    seed: int = 0) -> dict[str, Any]:
    """The verification operating point on every (or a sample of) pair of labelled embeddings."""
    same, different = sample_pairs(labels, seed)
    genuine = scorer.score(embeddings[same[:, 0]], embeddings[same[:, 1]]) if len(same) else np.empty(0)
    impostor = scorer.score(embeddings[different[:, 0]], embeddings[different[:, 1]]) if len(different) \
        else np.empty(0)
    return {"scorer": scorer.kind} | operating_point(genuine, impostor, far)


def unknown_rejection(embeddings: np.ndarray, labels: np.ndarray, prototypes: np.ndarray,
                      far: float = DEFAULT_FAR, unknown: np.ndarray | None = None) -> dict[str, Any]:
    """The threshold on the best cosine to the prototypes below which an image is "unknown".

    Each labelled image plays a known image (its best cosine over all classes). The unknown images are
    `unknown` (embeddings of classes the run does not know) when given; else each labelled image plays one
    too (its best cosine over the other classes: its own left out), which is optimistic when the model
    trained on those classes: it learned to push them apart, not a class it never saw. The threshold
    accepts at most `far` of the unknowns; `known_accepted` is the share of known images it keeps,
    `known_correct` the share kept and classified right."""
    if len(prototypes) < 2:
        raise InputError("unknown-class rejection needs 2 or more classes")
    cosines = normalized(embeddings) @ normalized(prototypes).T
    labels = np.asarray(labels)
    best_known = cosines.max(axis=1)
    if unknown is not None and len(unknown):
        best_unknown = (normalized(unknown) @ normalized(prototypes).T).max(axis=1)
        unknowns = f"{len(unknown)} images of classes the run does not know"
    else:
        others = cosines.copy()
        others[np.arange(len(labels)), labels] = -np.inf
        best_unknown = others.max(axis=1)
        unknowns = ("the run's own classes, each left out in turn; optimistic where it trained on them: add a "
                    "folder of other things to calibrate's DATA")
    threshold = threshold_at_far(best_unknown, far)
    accepted = best_known >= threshold
    return {"far_target": far, "threshold": threshold,
            "unknown_accepted": round(float(np.mean(best_unknown >= threshold)), 5),
            "known_accepted": round(float(np.mean(accepted)), 5),
            "known_correct": round(float(np.mean(accepted & (cosines.argmax(axis=1) == labels))), 5),
            "images": int(len(labels)), "unknowns": unknowns,
            "rule": "unknown when the largest cosine to the prototypes is below threshold"}
