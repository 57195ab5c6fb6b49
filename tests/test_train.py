"""`edgetl.train` end to end on generated images with real tf_keras training."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgetl
from edgetl.artifacts.manifest import read_manifest, sha256_of
from edgetl.errors import InputError, UsageError
from edgetl.network.model import load_model
from tests.conftest import TINY, write_image_folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by the read-only checks below."""
    root = tmp_path_factory.mktemp("trained")
    data = write_image_folder(root / "data", classes=3, per_class=10)
    (data / "class_1" / "broken.jpg").write_text("not an image")
    manifest = edgetl.train(str(data), str(root / "run"), **TINY | {"epochs": 2, "fine_tune_epochs": 1})
    return root, manifest


def test_run_directory_holds_model_labels_and_a_manifest_whose_hashes_match(trained):
    root, manifest = trained
    run = root / "run"
    assert sorted(p.name for p in run.iterdir()) == ["labels.txt", "manifest.json", "model.keras"]
    assert read_manifest(run) == manifest  # verifies every sha256 too
    assert manifest.files["model.keras"].sha256 == sha256_of(run / "model.keras")
    assert (run / "labels.txt").read_text().splitlines() == ["class_0", "class_1", "class_2"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "staging folder left behind"


def test_manifest_records_options_data_history_metrics_and_versions(trained):
    _, manifest = trained
    doc = manifest.to_json()
    assert doc["options"]["backbone"] == "mobilenet_v2" and doc["options"]["image_size"] == 32
    assert doc["backbone"]["preprocessing"]["mean"] == [127.5] * 3
    assert doc["dataset"]["class_counts"] == {"class_0": 10, "class_1": 10, "class_2": 10}
    assert doc["dataset"]["val_counts"] == {"class_0": 2, "class_1": 2, "class_2": 2}
    assert [s["reason"].startswith("cannot decode") for s in doc["dataset"]["skipped"]] == [True]
    assert doc["dataset"]["skipped"][0]["path"].endswith("broken.jpg")
    assert [(h["epoch"], h["phase"]) for h in doc["history"]] == [(1, "scratch"), (2, "scratch"), (3, "fine-tune")]
    best = max(doc["history"], key=lambda h: h["val_accuracy"])
    assert doc["metrics"]["val_accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-3)
    assert set(doc["metrics"]["per_class_accuracy"]) == {"class_0", "class_1", "class_2"}
    assert {"edgetl", "tensorflow", "tf-keras", "python"} <= set(doc["versions"])
    json.dumps(doc)


def test_saved_model_reproduces_the_reported_validation_accuracy(trained):
    """Reload the file and recompute accuracy on the recorded validation split."""
    from edgetl.backbones import get_backbone
    from edgetl.data import dataset_index as dsi
    from edgetl.data.pipeline import make_dataset

    root, manifest = trained
    model = load_model(root / "run" / "model.keras")
    full = dsi.index_data(root / "data").without({p["path"]: p["reason"] for p in manifest.sections["dataset"]["skipped"]})
    _, val = dsi.stratified_split(full, manifest.options["val_split"], manifest.options["seed"])
    assert val.fingerprint() == manifest.sections["dataset"]["val_fingerprint"]
    ds = make_dataset(val.paths, val.labels, image_size=32, batch_size=8,
                      preprocessing=get_backbone("mobilenet_v2").preprocessing, training=False)
    correct = sum(int(np.sum(np.argmax(model.predict(x, verbose=0), 1) == y.numpy())) for x, y in ds)
    assert correct / len(val.paths) == pytest.approx(manifest.metrics["val_accuracy"], abs=1e-3)


@pytest.mark.slow
def test_learns_an_easy_task_far_above_chance(tmp_path):
    """From scratch, every layer trained: this fails if BatchNorm statistics lag (chance-level validation)."""
    data = write_image_folder(tmp_path / "data", classes=4, per_class=30)
    manifest = edgetl.train(str(data), str(tmp_path / "run"),
                            **TINY | {"epochs": 0, "fine_tune_epochs": 10, "fine_tune_layers": "all",
                                      "fine_tune_learning_rate": 3e-3, "batch_size": 16})
    assert manifest.metrics["val_accuracy"] >= 0.75, manifest.sections["history"]


def test_chained_transfer_loads_backbone_from_a_previous_run(trained, tmp_path):
    root, parent_manifest = trained
    data = write_image_folder(tmp_path / "data2", classes=2, per_class=6)
    manifest = edgetl.train(str(data), str(tmp_path / "run2"), **TINY | {"weights": str(root / "run")})
    weights = manifest.sections["weights"]
    assert weights["source"] == "run" and weights["layers_loaded"] > 50
    assert manifest.parent["manifest_sha256"] == sha256_of(root / "run" / "manifest.json")
    # The frozen head phase leaves the backbone exactly as the parent trained it.
    parent = load_model(root / "run" / "model.keras")
    child = load_model(tmp_path / "run2" / "model.keras")
    for name in ("Conv1", "block_16_project"):
        for a, b in zip(parent.get_layer(name).get_weights(), child.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_weights_file_is_loaded_by_layer_name(trained, tmp_path):
    root, _ = trained
    source = load_model(root / "run" / "model.keras")
    weights_file = tmp_path / "backbone.h5"
    source.save_weights(str(weights_file))
    data = write_image_folder(tmp_path / "data", classes=2, per_class=6)
    manifest = edgetl.train(str(data), str(tmp_path / "run"), **TINY | {"weights": str(weights_file)})
    assert manifest.sections["weights"]["source"] == "file"
    assert manifest.sections["weights"]["layers_loaded"] > 50


def test_chained_transfer_refuses_a_different_backbone(trained, tmp_path):
    root, _ = trained
    data = write_image_folder(tmp_path / "data", classes=2, per_class=4)
    with pytest.raises(UsageError, match="same --backbone and --alpha"):
        edgetl.train(str(data), str(tmp_path / "run"), **TINY | {"weights": str(root / "run"), "alpha": 0.5})
    assert not (tmp_path / "run").exists()


def test_on_bad_image_fail_stops_before_training_and_names_the_file(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=2, per_class=4)
    (data / "class_0" / "zero.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"1 unreadable image\(s\): .*zero.png: empty file"):
        edgetl.train(str(data), str(tmp_path / "run"), **TINY | {"on_bad_image": "fail"})
    assert not (tmp_path / "run").exists()


def test_class_whose_images_are_all_unreadable_is_an_input_error(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=2, per_class=4)
    (data / "broken").mkdir()
    (data / "broken" / "a.png").write_text("nope")
    with pytest.raises(InputError, match="without readable images: broken"):
        edgetl.train(str(data), str(tmp_path / "run"), **TINY)


def test_val_dir_is_used_instead_of_a_split(tmp_path):
    train_dir = write_image_folder(tmp_path / "train", classes=2, per_class=6)
    val_dir = write_image_folder(tmp_path / "val", classes=2, per_class=3)
    manifest = edgetl.train(str(train_dir), str(tmp_path / "run"), **TINY | {"val_dir": str(val_dir)})
    dataset = manifest.sections["dataset"]
    assert dataset["split"]["method"] == "val_dir"
    assert dataset["train_counts"] == {"class_0": 6, "class_1": 6}
    assert dataset["val_counts"] == {"class_0": 3, "class_1": 3}
    assert manifest.metrics["val_images"] == 6


def test_existing_run_is_not_overwritten_without_the_flag(trained, tmp_path):
    root, manifest = trained
    with pytest.raises(UsageError, match="is an edgetl run; choose another output or pass --overwrite"):
        edgetl.train(str(root / "data"), str(root / "run"), **TINY)
    assert read_manifest(root / "run") == manifest


@pytest.mark.parametrize("options, message", [
    ({"epochs": 0}, "nothing would be trained"),
    ({"val_split": 1.0}, "--val-split"),
    ({"fine_tune_layers": "most"}, "--fine-tune-layers"),
    ({"image_size": 8}, "--image-size"),
    ({"weights": "imagenet", "alpha": 0.6}, "ImageNet weights for mobilenet_v2 exist for alpha"),
    ({"backbone": "vgg16"}, "unknown 'vgg16'"),
    ({"colour": "blue"}, "unknown train option"),
    ({"class_weights": "inverse"}, "--class-weights: must be one of none, balanced"),
])
def test_invalid_options_are_usage_errors_before_any_work(tmp_path, options, message):
    with pytest.raises(UsageError, match=message):
        edgetl.train(str(tmp_path / "missing"), str(tmp_path / "run"), **TINY | options)


def test_same_seed_gives_the_same_split_and_close_metrics(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=2, per_class=8)
    first = edgetl.train(str(data), str(tmp_path / "a"), **TINY)
    second = edgetl.train(str(data), str(tmp_path / "b"), **TINY)
    for key in ("train_fingerprint", "val_fingerprint"):
        assert first.sections["dataset"][key] == second.sections["dataset"][key]
    other_seed = edgetl.train(str(data), str(tmp_path / "c"), **TINY | {"seed": 1})
    assert other_seed.sections["dataset"]["val_fingerprint"] != first.sections["dataset"]["val_fingerprint"]
    assert first.metrics["val_accuracy"] == pytest.approx(second.metrics["val_accuracy"], abs=0.26)
    assert first.sections["history"][0]["loss"] == pytest.approx(second.sections["history"][0]["loss"], rel=0.05)
