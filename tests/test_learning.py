"""Does a run learn, and does it say so when it does not? From-scratch defaults on real data (the UCI
digits scikit-learn ships), the learning check, and chained transfer that inherits the parent's backbone."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import edgetl
from edgetl.artifacts.manifest import read_manifest
from edgetl.errors import UsageError
from edgetl.training.learning_check import learning_health, verification_cause
from tests.conftest import TINY, write_image_folder

CLASSES = tuple(str(i) for i in range(10))


def test_a_model_answering_one_class_is_flagged():
    labels = np.repeat(np.arange(10), 5)
    health = learning_health(labels, np.full(50, 3), CLASSES)
    assert health["status"] == "one_class" and health["dominant_prediction"] == "3"
    assert "predicts '3' for 100% of the validation images" in health["warning"]


def test_accuracy_at_the_constant_answer_is_flagged_and_a_learned_model_is_not():
    labels = np.repeat(np.arange(10), 5)
    rng = np.random.default_rng(0)
    guesses = rng.integers(0, 10, 50)
    assert learning_health(labels, guesses, CLASSES)["status"] == "at_chance"
    mostly_right = np.where(rng.random(50) < 0.8, labels, guesses)
    health = learning_health(labels, mostly_right, CLASSES)
    assert (health["status"], health["warning"]) == ("ok", None) and health["val_accuracy"] > 0.7
    assert learning_health(labels[:5], labels[:5], CLASSES)["status"] == "too_few_images"


def test_export_names_a_float_model_that_never_learned_as_the_cause():
    labels = np.repeat(np.arange(3), 10)
    flat = np.full((30, 3), 1 / 3) + np.array([0.001, 0.0, 0.0])  # one class, near-uniform
    cause = verification_cause({"weights": "none"}, flat, labels, ["a", "b", "c"])
    assert cause.startswith("cause: the float model itself did not learn") and "--weights imagenet" in cause
    confident = np.eye(3)[labels] * 0.9 + 0.05
    assert verification_cause({"weights": "none"}, confident, labels, ["a", "b", "c"]) is None


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from edgetl.demo import write_digits_folder

    root = tmp_path_factory.mktemp("digits")
    write_digits_folder(root / "digits")
    return root / "digits"


@pytest.mark.slow
def test_from_scratch_with_default_options_learns_real_digits(digits, tmp_path):
    """--weights none and the defaults for everything about the schedule: the first phase trains the whole
    network (before: a frozen random backbone, validation at chance)."""
    manifest = edgetl.train(str(digits), str(tmp_path / "run"), backbone="mobilenet_v2", alpha=0.35,
                            image_size=32, weights="none", epochs=3, augment=False)
    assert manifest.metrics["learning"]["status"] == "ok", manifest.metrics["learning"]
    assert manifest.metrics["val_accuracy"] >= 0.6, manifest.metrics  # chance is 0.10
    assert [h["phase"] for h in manifest.to_json()["history"]] == ["scratch"] * 3


def test_chained_transfer_inherits_backbone_alpha_and_size(run, tmp_path):
    data = write_image_folder(tmp_path / "data", classes=2, per_class=6)
    manifest = edgetl.train(str(data), str(tmp_path / "next"), weights=str(run), epochs=1, fine_tune_epochs=0,
                            batch_size=8,
                            augment=False)
    parent = read_manifest(run).to_json()["backbone"]
    child = manifest.to_json()["backbone"]
    assert (child["name"], child["alpha"], child["image_size"]) == \
        (parent["name"], parent["alpha"], parent["image_size"]) == (TINY["backbone"], TINY["alpha"], 32)
    with pytest.raises(UsageError, match="alpha"):
        edgetl.train(str(data), str(tmp_path / "other"), weights=str(run), alpha=1.0, epochs=1)
    shutil.rmtree(tmp_path / "next")


def test_defaults_follow_what_the_first_phase_trains(tmp_path):
    """Pretrained: the head at 1e-2, then fine-tuning every layer at 3e-4, not augmented; from scratch: 3e-3,
    augmented, and no second phase. Given values are kept; --epochs, when not given, buys HEAD_STEPS optimizer
    steps (SCRATCH_STEPS from scratch) and at least MIN_EPOCHS; --fine-tune-epochs FINE_TUNE_STEPS and at least
    FINE_TUNE_EPOCHS."""
    from edgetl.training.config import (FINE_TUNE_EPOCHS, FINE_TUNE_STEPS, HEAD_STEPS, MIN_EPOCHS, SCRATCH_STEPS,
                                        TrainConfig)

    pretrained = TrainConfig.create(data=tmp_path, output=tmp_path / "a")
    scratch = TrainConfig.create(data=tmp_path, output=tmp_path / "b", weights="none")
    assert (pretrained.learning_rate, pretrained.fine_tune_epochs, pretrained.epochs) == (1e-2, None, None)
    assert (pretrained.fine_tune_layers, pretrained.fine_tune_learning_rate, pretrained.augment) == ("all", 3e-4, False)
    assert (scratch.learning_rate, scratch.fine_tune_epochs, scratch.augment) == (3e-3, 0, True)
    assert TrainConfig.create(data=tmp_path, output=tmp_path / "f", augment=True).augment is True
    assert TrainConfig.create(data=tmp_path, output=tmp_path / "g", weights="none", augment=False).augment is False
    assert TrainConfig.create(data=tmp_path, output=tmp_path / "e", head="attention").learning_rate == 1e-3
    given = TrainConfig.create(data=tmp_path, output=tmp_path / "c", learning_rate=5e-4, fine_tune_epochs=0,
                               epochs=2)
    assert (given.learning_rate, given.fine_tune_epochs, given.epochs) == (5e-4, 0, 2)
    few, many = pretrained.default_epochs(100), pretrained.default_epochs(50_000)
    assert few == -(-HEAD_STEPS // 4) and few * 4 >= HEAD_STEPS  # 100 images at batch 32: 4 steps an epoch
    assert many == MIN_EPOCHS
    assert scratch.default_epochs(100) == -(-SCRATCH_STEPS // 4) < few
    assert pretrained.default_fine_tune_epochs(100) == -(-FINE_TUNE_STEPS // 4)
    assert pretrained.default_fine_tune_epochs(50_000) == FINE_TUNE_EPOCHS
    with pytest.raises(UsageError, match="nothing would be trained"):
        TrainConfig.create(data=tmp_path, output=tmp_path / "h", epochs=0, fine_tune_epochs=0)
    assert TrainConfig.create(data=tmp_path, output=tmp_path / "i", epochs=0).fine_tune_epochs is None
    with pytest.raises(UsageError, match="nothing would be trained"):
        TrainConfig.create(data=tmp_path, output=tmp_path / "d", weights="none", epochs=0)


def test_the_manifest_records_the_epochs_the_run_used(run, tmp_path):
    from edgetl.training.config import HEAD_STEPS

    data = write_image_folder(tmp_path / "data", classes=2, per_class=100)  # 160 training images: 20 steps of 8
    options = {k: v for k, v in TINY.items() if k != "epochs"} | {"weights": str(run)}
    manifest = edgetl.train(str(data), str(tmp_path / "run"), **options)
    steps = -(-sum(manifest.sections["dataset"]["train_counts"].values()) // TINY["batch_size"])
    epochs = manifest.options["epochs"]
    assert epochs == -(-HEAD_STEPS // steps) and len(manifest.sections["history"]) == epochs
    assert manifest.sections["feature_cache"]["used"]
