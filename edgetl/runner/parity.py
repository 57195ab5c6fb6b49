"""Accuracy parity of an exported model against the float Keras model, on labelled images."""

from __future__ import annotations

from typing import Any

import numpy as np


def accuracy_by_class(predicted: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    return {name: (float(np.mean(predicted[labels == i] == i)) if np.any(labels == i) else None)
            for i, name in enumerate(classes)}


def parity(probabilities: np.ndarray, labels: np.ndarray, classes: list[str],
           reference: np.ndarray | None) -> dict[str, Any]:
    """Accuracy, and versus the reference: accuracy delta in points, top-1 agreement, per-class change,
    mean |difference| of probabilities. Without a reference the comparisons are None."""
    predicted = np.argmax(probabilities, 1)
    result: dict[str, Any] = {"images": int(len(labels)), "accuracy": float(np.mean(predicted == labels)),
                              "per_class_accuracy": accuracy_by_class(predicted, labels, classes),
                              "accuracy_delta_pts": None, "top1_agreement": None, "mean_abs_prob_diff": None,
                              "per_class_delta_pts": None}
    if reference is None:
        return result
    ref_predicted = np.argmax(reference, 1)
    ref_per_class = accuracy_by_class(ref_predicted, labels, classes)
    result.update(
        accuracy_delta_pts=100.0 * (result["accuracy"] - float(np.mean(ref_predicted == labels))),
        top1_agreement=float(np.mean(predicted == ref_predicted)),
        mean_abs_prob_diff=float(np.mean(np.abs(probabilities.astype(np.float64) - reference))),
        per_class_delta_pts={name: (None if ref_per_class[name] is None else
                                    100.0 * (result["per_class_accuracy"][name] - ref_per_class[name]))
                             for name in classes})
    return result


def gate(result: dict[str, Any], max_accuracy_drop: float | None, min_agreement: float | None) -> dict[str, Any]:
    """Pass/fail with every reason; a gate that needs a reference fails when there is none.
    A multi-task result (edgetl/training/multitask.py) passes only when every task passes on its own."""
    if result.get("tasks"):
        reasons = [f"task {task}: {reason}" for task, numbers in result["tasks"].items()
                   for reason in gate(numbers, max_accuracy_drop, min_agreement)["reasons"]]
        return {"passed": not reasons, "reasons": reasons}
    reasons = []
    if max_accuracy_drop is not None:
        delta = result["accuracy_delta_pts"]
        if delta is None:
            reasons.append("no float reference to measure the accuracy drop against")
        elif -delta > max_accuracy_drop:
            reasons.append(f"accuracy drop {-delta:.2f} pts > {max_accuracy_drop} pts")
    if min_agreement is not None:
        agreement = result["top1_agreement"]
        if agreement is None:
            reasons.append("no float reference to measure agreement against")
        elif agreement < min_agreement:
            reasons.append(f"top-1 agreement {agreement:.4f} < {min_agreement}")
    return {"passed": not reasons, "reasons": reasons}
