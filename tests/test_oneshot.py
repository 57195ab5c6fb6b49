"""One-shot work end to end on a real (tiny) siamese run: the twin trains, the threshold is calibrated,
`edgetl verify`, `classify` (unknown classes), `calibrate` and `evaluate` through the CLI, and the exported
embedding file: same decisions, metadata MediaPipe's ImageEmbedder reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgetl
from tests.conftest import MEDIAPIPE_VERSION, TINY, class_image, run_cli, run_or_fail, write_image_folder


@pytest.fixture(scope="module")
def siamese_run(run, tmp_path_factory) -> Path:
    """Classes 0 and 1, on the backbone of the session run; classes 2 and 3 stay unseen."""
    root = tmp_path_factory.mktemp("siamese")
    data = write_image_folder(root / "data", classes=2, per_class=16)
    edgetl.train(str(data), str(root / "run"), **TINY | {"weights": str(run), "head": "siamese", "epochs": 6})
    # Training calibrated on its 6 validation images (9 different pairs: too few, and it says so); as a user
    # would, calibrate on more labelled images of the same classes, not used in training, and of one class the
    # app must not recognise (class 2): the unknown threshold is set on it. Without it, classes 0 and 1 play the
    # unknown in turn; the twin learned to push them apart, so the threshold fell to cosine 0 (measured) and
    # `classify` rejected nothing.
    for label in (0, 1, 2):
        _images(root / "calibration" / f"class_{label}", label, range(100, 120))
    edgetl.calibrate(str(root / "run"), str(root / "calibration"))
    return root / "run"


def _images(root: Path, label: int, indices: range, size: int = 40) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in indices:
        path = root / f"c{label}_{i}.png"
        class_image(label, i, size).save(path)
        paths.append(str(path))
    return paths


def _embed(run_path: Path, paths: list[str]) -> np.ndarray:
    from edgetl.artifacts.run_dir import Run, load_images
    from edgetl.network.heads import embedding_model

    run = Run.open(run_path)
    return embedding_model(run.model)(load_images(paths, run.image_size, run.preprocessing)).numpy()


def test_the_twin_learns_and_the_run_records_its_scorer_and_thresholds(siamese_run) -> None:
    from edgetl.network.similarity import Scorer

    manifest = json.loads((siamese_run / "manifest.json").read_text())
    history = manifest["history"]
    assert max(e["val_accuracy"] for e in history) >= 0.9, history  # pair accuracy on the fixed validation pairs
    similarity = manifest["similarity"]
    scorer = Scorer.from_json(similarity["scorer"])
    assert scorer.kind == "weighted_l1" and len(scorer.weights) == 128
    assert similarity["pairs"]["roc_auc"] >= 0.9 and "threshold" in similarity["unknown"]
    assert similarity["pairs"]["pairs"] == {"same": 3 * 190, "different": 3 * 400}  # every pair of the 60 images
    assert similarity["unknown"]["unknowns"] == "20 images of classes the run does not know"
    # The refitted scorer ranks pairs of new images of the training classes: same above different.
    a, b = _embed(siamese_run, _images(siamese_run.parent / "x", 0, range(30, 34))), \
        _embed(siamese_run, _images(siamese_run.parent / "x", 1, range(30, 34)))
    assert scorer.score(a[:2], a[2:]).min() > scorer.score(a, b).max()


def test_verify_through_the_cli(siamese_run, tmp_path) -> None:
    from edgetl.network.similarity import Scorer

    zero, one = _images(tmp_path, 0, range(40, 42)), _images(tmp_path, 1, range(40, 41))
    done = run_cli("verify", str(siamese_run), *zero, "--json")
    assert done.returncode == 0, done.stderr
    results = {"same": json.loads(done.stdout), "different": edgetl.verify(str(siamese_run), zero[0], one[0])}
    threshold = json.loads((siamese_run / "manifest.json").read_text())["similarity"]["pairs"]["threshold"]
    scorer = Scorer.from_json(json.loads((siamese_run / "manifest.json").read_text())["similarity"]["scorer"])
    embeddings = _embed(siamese_run, zero + one)
    assert results["same"]["score"] == pytest.approx(float(scorer.score(embeddings[0], embeddings[1])), abs=1e-4)
    assert results["same"]["threshold"] == threshold
    assert results["same"]["same"] is True and results["different"]["same"] is False
    done = run_cli("verify", str(siamese_run), zero[0], one[0])  # the text form says the same
    assert done.returncode == 0 and done.stdout.startswith("different: score"), done.stdout
    # Two sizes and formats: a 120 px JPEG of class 0 against a 40 px PNG of it, decoded and resized as training.
    big = tmp_path / "big.jpg"
    class_image(0, 40, size=120).convert("RGB").save(big, quality=95)
    mixed = edgetl.verify(str(siamese_run), str(big), zero[1])
    assert mixed["same"] is True, mixed


def test_verify_refuses_bad_input_in_one_line(run, siamese_run, tmp_path) -> None:
    image = _images(tmp_path, 0, range(1))[0]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for args, expected in (([str(siamese_run), image, str(tmp_path / "missing.png")], "missing.png: no such file"),
                           ([str(siamese_run), image, str(tmp_path / "broken.png")], "broken.png"),
                           ([str(run), image, image], "no calibrated threshold")):
        done = run_cli("verify", *args)
        assert done.returncode == 2, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and expected in errors[0] and "Traceback" not in done.stderr, done.stderr


def test_classify_rejects_unseen_classes_more_than_known_ones(siamese_run, tmp_path) -> None:
    known = _images(tmp_path, 0, range(50, 60)) + _images(tmp_path, 1, range(50, 60))
    unseen = _images(tmp_path, 2, range(50, 60)) + _images(tmp_path, 3, range(50, 60))
    done = run_cli("classify", str(siamese_run), *known, *unseen, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    threshold = rows[0]["unknown_threshold"]
    assert all((row["label"] == "unknown") == (row["cosine"] < threshold) for row in rows)
    rejected = [row["label"] == "unknown" for row in rows]
    assert np.mean(rejected[20:]) > np.mean(rejected[:20]), rows
    assert all(row["label"] in ("unknown", f"class_{i // 10}") for i, row in enumerate(rows[:20]))


def test_calibrate_moves_the_threshold_with_far_and_keeps_the_run_valid(siamese_run, tmp_path) -> None:
    import shutil

    from edgetl.artifacts.run_dir import Run

    run_path = tmp_path / "run"
    shutil.copytree(siamese_run, run_path)
    strict = edgetl.calibrate(str(run_path), far=0.01)
    loose = run_cli("calibrate", str(run_path), "--far", "0.3", "--json")
    assert loose.returncode == 0, loose.stderr
    loose = json.loads(loose.stdout)
    assert loose["pairs"]["threshold"] <= strict["pairs"]["threshold"]
    assert loose["pairs"]["far"] <= 0.3 and loose["pairs"]["tar"] >= strict["pairs"]["tar"]
    run = Run.open(run_path)  # the manifest still verifies every file
    assert run.manifest.sections["similarity"]["pairs"]["far_target"] == 0.3
    # New classes: the pair threshold is recalibrated on them; the unknown threshold (needs the run's classes) stays.
    new = write_image_folder(tmp_path / "new", classes=4, per_class=6)
    for known in ("class_0", "class_1"):
        shutil.rmtree(new / known)
    done = run_cli("calibrate", str(run_path), "--data", str(new), "--json")
    assert done.returncode == 0, done.stderr
    section = json.loads(done.stdout)
    assert section["calibrated_on"] == str(new.resolve()) and section["pairs"]["pairs"]["same"] == 2 * 15
    assert section["unknown"] == loose["unknown"]
    assert run_cli("calibrate", str(run_path), "--far", "1.5").returncode == 2


def test_evaluate_runs_episodes_on_unseen_classes_beside_the_backbone_features(siamese_run, tmp_path) -> None:
    import shutil

    unseen = write_image_folder(tmp_path / "unseen", classes=4, per_class=8)
    for known in ("class_0", "class_1"):
        shutil.rmtree(unseen / known)
    done = run_cli("evaluate", str(siamese_run), "--data", str(unseen), "--way", "2", "--shot", "1",
                   "--episodes", "40", "--json", "--no-baseline")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["classes_seen_in_training"] == [] and result["episodes"] == 40
    model = result["model"]
    assert 0.5 <= model["accuracy"] <= 1.0 and model["ci95"] >= 0 and 0 <= model["roc_auc"] <= 1
    assert {"far", "tar", "threshold"} <= set(model["at_run_threshold"])
    done = run_cli("evaluate", str(siamese_run), "--data", str(unseen), "--way", "3")
    assert done.returncode == 2 and "lower --way" in done.stderr, done.stderr
    # The baseline needs ImageNet weights: not installed for mobilenet_v2 and not asked for by this run (it
    # started from another run), so it is skipped, saying why, rather than downloaded.
    done = run_cli("evaluate", str(siamese_run), "--data", str(unseen), "--way", "2", "--episodes", "10", "--json")
    assert done.returncode == 0, done.stderr
    skipped = json.loads(done.stdout)["imagenet_features"]["skipped"]
    assert "did not start from them" in skipped and "gain" not in json.loads(done.stdout), skipped


@pytest.fixture(scope="module")
def exported(siamese_run, tmp_path_factory) -> tuple[Path, object]:
    """A copy of the siamese run with its float TFLite export."""
    import shutil

    run_path = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(siamese_run, run_path)
    return run_path, edgetl.export(str(run_path), format="tflite", quantize="none", verify_size=16)


def test_exported_embedding_decides_like_the_run_and_carries_embedder_metadata(exported, tmp_path) -> None:
    from edgetl.converters.tflite_metadata import read_metadata

    run_path, artifact = exported
    folder = run_path / "artifacts" / "tflite-none"
    facts = artifact.sections["prototypes"]
    assert facts["decision_agreement"] == 1.0 and facts["embedding_min_cosine"] >= 0.999
    table = json.loads((folder / "prototypes.json").read_text())
    manifest = json.loads((run_path / "manifest.json").read_text())
    assert table["similarity"]["verify"]["threshold"] == manifest["similarity"]["pairs"]["threshold"]
    assert table["similarity"]["scorer"]["weights"] == manifest["similarity"]["scorer"]["weights"]
    metadata = read_metadata((folder / "embedding.tflite").read_bytes())
    assert metadata["output_name"] == "embedding" and metadata["labels"] == []
    assert metadata["mean"] == pytest.approx(manifest["backbone"]["preprocessing"]["mean"])
    pair = _images(tmp_path, 0, range(70, 71)) + _images(tmp_path, 1, range(70, 71))
    from_run, from_file = edgetl.verify(str(run_path), *pair), edgetl.verify(str(folder / "embedding.tflite"), *pair)
    assert from_file["score"] == pytest.approx(from_run["score"], abs=1e-4) and from_file["same"] == from_run["same"]


MEDIAPIPE_EMBEDDER = """
import json, sys
import mediapipe as mp
from mediapipe.tasks.python import BaseOptions, vision

job = json.load(open(sys.argv[1]))
options = vision.ImageEmbedderOptions(base_options=BaseOptions(model_asset_path=job["model"]), l2_normalize=True)
with vision.ImageEmbedder.create_from_options(options) as embedder:
    found = [embedder.embed(mp.Image.create_from_file(p)).embeddings[0] for p in job["images"]]
    cosines = [vision.ImageEmbedder.cosine_similarity(found[a], found[b]) for a, b in job["pairs"]]
json.dump({"cosines": cosines, "embeddings": [list(map(float, e.embedding)) for e in found]}, open(sys.argv[2], "w"))
"""


def test_mediapipe_image_embedder_runs_the_embedding_file_unmodified(exported, mediapipe_python, tmp_path) -> None:
    """The float embedding.tflite in MediaPipe Tasks (mediapipe==MEDIAPIPE_VERSION), as shipped: its embeddings
    are edgetl's (cosine_similarity equals the cosine of edgetl's), and the run's scorer on them makes
    edgetl verify's decisions."""
    import itertools

    from edgetl.artifacts.run_dir import Run
    from edgetl.network.similarity import COSINE, Scorer

    run_path, _ = exported
    folder = run_path / "artifacts" / "tflite-none"
    size = Run.open(run_path).image_size  # images at the model's size: no resampling difference between the two
    images = _images(tmp_path / "img", 0, range(80, 83), size) + _images(tmp_path / "img", 1, range(80, 83), size)
    pairs = list(itertools.combinations(range(len(images)), 2))
    job = {"model": str(folder / "embedding.tflite"), "images": images, "pairs": pairs}
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "runner.py").write_text(MEDIAPIPE_EMBEDDER)
    run_or_fail([str(mediapipe_python), str(tmp_path / "runner.py"), str(tmp_path / "job.json"),
                 str(tmp_path / "out.json")], f"MediaPipe {MEDIAPIPE_VERSION} ImageEmbedder", 300)
    out = json.loads((tmp_path / "out.json").read_text())
    embeddings = np.asarray(out["embeddings"], np.float32)
    ours = _embed(run_path, images)
    np.testing.assert_allclose(out["cosines"], [float(COSINE.score(ours[a], ours[b])) for a, b in pairs], atol=2e-3)
    scorer = Scorer.from_json(json.loads((folder / "prototypes.json").read_text())["similarity"]["scorer"])
    verdicts = [edgetl.verify(str(folder), images[a], images[b]) for a, b in pairs]
    threshold = verdicts[0]["threshold"]
    np.testing.assert_allclose([float(scorer.score(embeddings[a], embeddings[b])) for a, b in pairs],
                               [v["score"] for v in verdicts], atol=2e-3)
    assert [float(scorer.score(embeddings[a], embeddings[b])) >= threshold for a, b in pairs] == \
        [v["same"] for v in verdicts]


def test_bundle_clients_verify_with_the_threshold_baked_in(exported, node_modules, tmp_path) -> None:
    """The bundle of a siamese artifact: the Python (LiteRT) and Node (onnxruntime-node) clients reproduce every
    test-vector pair's score and decision in --selftest, and --verify decides as edgetl verify does."""
    from tests.test_bundle import node_client, python_client

    run_path, _ = exported
    edgetl.export(str(run_path), format="onnx", quantize="none", verify_size=16)
    pair = _images(tmp_path / "img", 0, range(90, 91)) + _images(tmp_path / "img", 1, range(90, 91))
    same_class = _images(tmp_path / "img", 0, range(91, 93))
    for variant, run_client in (("tflite-none", python_client),
                                ("onnx-none", lambda folder, *args: node_client(folder, node_modules, *args))):
        bundle = tmp_path / variant
        edgetl.bundle(str(run_path / "artifacts" / variant), str(bundle))
        spec = json.loads((bundle / "model.json").read_text())
        assert spec["embedding"]["similarity"]["scorer"]["kind"] == "weighted_l1"
        done = run_client(bundle, "--selftest")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "  ok    verify: 15 pairs, same decisions" in done.stdout, done.stdout
        for images in (pair, same_class):
            done = run_client(bundle, "--verify", *images)
            assert done.returncode == 0, done.stdout + done.stderr
            ours = edgetl.verify(str(run_path / "artifacts" / variant), *images)
            assert done.stdout.strip().startswith(f"{'same' if ours['same'] else 'different'}: score "
                                                  f"{ours['score']:.4f}"), (done.stdout, ours)
        # Classifying, the clients say `unknown` exactly where edgetl classify does.
        unseen = _images(tmp_path / "img", 2, range(90, 100)) + _images(tmp_path / "img", 3, range(90, 100))
        rows = edgetl.classify(str(run_path / "artifacts" / variant), pair + unseen)
        rejected = [row["image"] for row in rows if row["label"] == "unknown"]
        assert rejected, rows  # some images of the unseen classes 2 and 3 are rejected
        images = pair + rejected[:3]
        done = run_client(bundle, *images)
        assert done.returncode == 0, done.stdout + done.stderr
        blocks = done.stdout.split("\n" + str(tmp_path))
        said_unknown = ["  unknown: best cosine" in block for block in blocks]
        expected = [row["label"] == "unknown" for row in rows[:2]] + [True] * len(rejected[:3])
        assert said_unknown == expected, (done.stdout, rows)
    expected = json.loads((tmp_path / "tflite-none" / "test_vectors" / "expected.json").read_text())
    expected["verify"]["pairs"][3]["score"] += 0.5  # a client that disagrees must fail and say where
    (tmp_path / "tflite-none" / "test_vectors" / "expected.json").write_text(json.dumps(expected))
    done = python_client(tmp_path / "tflite-none", "--selftest")
    assert done.returncode == 1 and "FAIL  verify" in done.stdout and "1 of 15 verify pairs" in done.stdout, done.stdout
