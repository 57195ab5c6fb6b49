"""Did the model learn? A finished run at chance, or one that answers one class for everything, says so.

Training that "succeeds" at chance is the silent failure of transfer tools (a frozen random backbone, a
learning rate for the wrong starting point): the run is written as if all were well and every export of
it disagrees with it. This check compares the validation accuracy with the best constant answer (always
the most common validation class) and looks at how concentrated the predictions are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CHANCE_MARGIN = 0.05  # accuracy within this of the best constant answer counts as chance
ONE_CLASS_SHARE = 0.95  # this share of predictions on one class is a collapsed model
MIN_IMAGES = 10  # too few validation images to tell


def learning_health(labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """{"status": "ok" | "at_chance" | "one_class" | "too_few_images", numbers, "warning": text or None}."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if len(labels) < MIN_IMAGES or len(classes) < 2:
        return {"status": "too_few_images", "warning": None, "images": int(len(labels))}
    accuracy = float(np.mean(labels == predicted))
    constant = float(np.max(np.bincount(labels, minlength=len(classes)))) / len(labels)
    counts = np.bincount(predicted, minlength=len(classes))
    dominant, share = int(np.argmax(counts)), float(np.max(counts)) / len(predicted)
    numbers = {"val_accuracy": round(accuracy, 4), "constant_answer_accuracy": round(constant, 4),
               "dominant_prediction": classes[dominant], "dominant_share": round(share, 4)}
    if share >= ONE_CLASS_SHARE:
        status = "one_class"
        warning = (f"the model predicts {classes[dominant]!r} for {share:.0%} of the validation images "
                   f"(validation accuracy {accuracy:.3f}): it did not learn")
    elif accuracy <= constant + CHANCE_MARGIN:
        status = "at_chance"
        warning = (f"validation accuracy {accuracy:.3f} is at chance (always answering the most common class "
                   f"scores {constant:.3f}): the model did not learn")
    else:
        return {"status": "ok", "warning": None, **numbers}
    return {"status": status, "warning": warning, **numbers}


def advice(options: dict[str, Any]) -> str:
    """What to try, for the options the run was trained with."""
    tips = []
    if options.get("weights") == "none":
        tips.append("start from pretrained weights (--weights imagenet, offline for efficientnet_lite0)")
        tips.append("more --epochs, or a different --learning-rate (from scratch: 1e-3 to 3e-3)")
    else:
        tips.append("more --epochs and --fine-tune-epochs")
    tips.append("check that the class folders hold what their names say")
    return "try " + "; ".join(tips)


def verification_cause(run_metrics: dict[str, Any], reference: np.ndarray, labels: np.ndarray,
                       classes: list[str]) -> str | None:
    """Why an exported file disagrees with a float model that never learned, or None when the float model did.

    A model that answers one class with near-uniform probabilities flips its answer under the smallest
    numeric change, so "agreement 0.000" is then a property of the run, not of the conversion."""
    found = learning_health(np.asarray(labels), np.argmax(reference, axis=1), tuple(classes))
    recorded = run_metrics.get("learning", {})
    warning = found.get("warning") or recorded.get("warning")
    if not warning:
        return None
    margin = float(np.mean(np.sort(reference, axis=1)[:, -1] - np.sort(reference, axis=1)[:, -2]))
    return (f"cause: the float model itself did not learn ({warning}; mean top-1 margin {margin:.3f}, so any "
            f"rounding flips its answers); retrain the run first ({advice({'weights': run_metrics.get('weights')})})")
