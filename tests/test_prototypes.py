"""The prototype head: few-shot classes from mean embeddings, `edgetl enroll`, and exports that carry
the embedding model and prototype table so an app can add classes itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgetl
from tests.conftest import TINY, class_image, run_cli, write_image_folder


@pytest.fixture(scope="module")
def proto_run(run, tmp_path_factory) -> Path:
    """Trained on classes 0 and 1 only, on the backbone of the session run (which has seen class 2)."""
    root = tmp_path_factory.mktemp("proto")
    data = write_image_folder(root / "data", classes=2, per_class=12)
    edgetl.train(str(data), str(root / "run"), **TINY | {"weights": str(run), "head": "prototype", "epochs": 3})
    return root / "run"


def _images(root: Path, label: int, indices: range) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in indices:
        path = root / f"c{label}_{i}.png"
        class_image(label, i).save(path)
        paths.append(str(path))
    return paths


def test_prototypes_are_mean_training_embeddings(proto_run) -> None:
    from edgetl.artifacts.run_dir import Run, load_images
    from edgetl.training import prototypes

    run = Run.open(proto_run)
    table = prototypes.prototypes_of(run.model)
    assert table.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, atol=1e-5)
    paths, labels = run.sample("train", 1000)
    embeddings = prototypes.embedding_model(run.model)(load_images(paths, run.image_size, run.preprocessing)).numpy()
    np.testing.assert_allclose(table, prototypes.class_means(embeddings, np.asarray(labels), 2), atol=1e-4)
    assert run.manifest.metrics["val_accuracy"] == 1.0


def test_enroll_adds_a_class_the_exported_model_predicts(proto_run, tmp_path) -> None:
    import shutil

    from edgetl.artifacts.run_dir import Run, load_images
    from edgetl.exporting.exporter import export_run
    from edgetl.targets import open_session

    run_path = tmp_path / "run"
    shutil.copytree(proto_run, run_path)
    shots = _images(tmp_path / "shots", 2, range(3))
    result = run_cli("enroll", str(run_path), "--class", "class_2", *shots, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["classes"] == 3
    run = Run.open(run_path)
    assert run.labels == ["class_0", "class_1", "class_2"]
    assert run.manifest.sections["prototypes"]["enrolled"][0]["class"] == "class_2"

    held_out = load_images(_images(tmp_path / "test", 2, range(20, 30)), run.image_size, run.preprocessing)
    artifact = export_run(run_path, format="tflite", quantize="int8", calibration_size=16, verify_size=16)
    folder = run_path / "artifacts" / "tflite-int8"
    assert set(artifact.files) == {"model.tflite", "labels.txt", "embedding.tflite", "prototypes.json"}
    predicted = open_session(folder / "model.tflite").predict(held_out).argmax(axis=1)
    assert np.mean(predicted == 2) >= 0.8, predicted

    # What an app does on device: embed a few photos of a new class with embedding.tflite, append.
    table = json.loads((folder / "prototypes.json").read_text())
    embed = open_session(folder / "embedding.tflite")
    third = _images(tmp_path / "shots3", 2, range(3, 6))
    vector = embed.predict(load_images(third, run.image_size, run.preprocessing)).mean(axis=0)
    vectors = np.vstack([np.asarray(table["vectors"])[:2], vector / np.linalg.norm(vector)])
    on_device = (embed.predict(held_out) @ vectors.T).argmax(axis=1)
    assert np.mean(on_device == 2) >= 0.8, on_device


def test_enroll_replaces_an_existing_class(proto_run, tmp_path) -> None:
    import shutil

    from edgetl.artifacts.run_dir import Run
    from edgetl.training import prototypes

    run_path = tmp_path / "run"
    shutil.copytree(proto_run, run_path)
    before = prototypes.prototypes_of(Run.open(run_path).model)
    prototypes.enroll(run_path, "class_1", _images(tmp_path / "shots", 1, range(40, 42)))
    after = prototypes.prototypes_of(Run.open(run_path).model)
    assert after.shape == before.shape
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.allclose(after[1], before[1])


def test_enroll_refuses_bad_input(run, proto_run, tmp_path) -> None:
    image = _images(tmp_path, 0, range(1))[0]
    cases = [([str(run), "--class", "x", image], "--head prototype"),
             ([str(proto_run), "--class", "x", str(tmp_path / "missing.png")], "no such file"),
             ([str(proto_run), "--class", " ", image], "--class")]
    for args, message in cases:
        result = run_cli("enroll", *args)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr
