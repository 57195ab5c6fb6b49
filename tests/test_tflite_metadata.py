"""TFLite Metadata: round trip, unchanged inference in LiteRT, and a stock client (MediaPipe Tasks).

MediaPipe runs in its own virtualenv, built once under the test cache directory: no mediapipe release
can be installed beside this project's dependencies (mediapipe >= 0.10.30 needs absl-py ~=2.3, while
tensorflow-model-optimization 0.8.1 needs absl-py ~=1.2; older mediapipe needs protobuf < 5, while
TensorFlow 2.21 needs protobuf >= 6.31).
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetl.converters.tflite_metadata import LABELS_FILE, METADATA_NAME, add_metadata, read_metadata
from edgetl.errors import InputError
from tests.conftest import MEDIAPIPE_RUNNER, run_or_fail

LABELS = ["cat", "dog", "bird"]
SCALAR = {"mean": [127.5], "std": [127.5]}
PER_CHANNEL = {"mean": [120.0, 110.0, 100.0], "std": [60.0, 58.0, 62.0]}


@pytest.fixture(scope="module")
def float_model() -> bytes:
    """A tiny float classifier: 32x32 RGB in, 3 softmax probabilities out."""
    from edgetl.tf_env import keras, tf

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([k.Input((32, 32, 3)), k.layers.Conv2D(4, 3, activation="relu"),
                          k.layers.GlobalAveragePooling2D(), k.layers.Dense(3, activation="softmax")])
    return tf().lite.TFLiteConverter.from_keras_model(model).convert()


def with_metadata(model: bytes, **overrides) -> bytes:
    arguments = {"name": "tiny-classifier", "version": "0.1.0", "description": "Test classifier.",
                 "labels": LABELS, "input_min": -1.0, "input_max": 1.0, "license": "Apache-2.0", **SCALAR}
    return add_metadata(model, **{**arguments, **overrides})


def litert_probabilities(model: bytes, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    rows = []
    for image in images:
        interpreter.set_tensor(input_index, image[None].astype(np.float32))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(output_index)[0].copy())
    return np.stack(rows)


def metadata_entries(model: bytes) -> list[tuple[str, int]]:
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(model, 0)
    return [(root.Metadata(i).Name().decode(), root.Metadata(i).Buffer()) for i in range(root.MetadataLength())]


def test_round_trip(float_model: bytes) -> None:
    assert read_metadata(float_model) is None
    metadata = read_metadata(with_metadata(float_model))
    assert metadata == {
        "name": "tiny-classifier", "version": "0.1.0", "description": "Test classifier.", "author": "edgetl",
        "license": "Apache-2.0", "min_parser_version": "1.0.0", "input_name": "image", "mean": [127.5],
        "std": [127.5], "input_min": [-1.0], "input_max": [1.0], "output_name": "probability", "labels": LABELS}
    per_channel = read_metadata(with_metadata(float_model, input_min=None, input_max=None, **PER_CHANNEL))
    assert per_channel["mean"] == PER_CHANNEL["mean"]
    assert per_channel["std"] == pytest.approx(PER_CHANNEL["std"])
    assert per_channel["input_min"] is None and per_channel["input_max"] is None


def test_layout_is_the_official_one(float_model: bytes) -> None:
    model = with_metadata(float_model)
    entries = metadata_entries(model)
    # The converter's own entries stay; ours is added once.
    assert {name for name, _ in metadata_entries(float_model)} < {name for name, _ in entries}
    assert [name for name, _ in entries].count(METADATA_NAME) == 1
    assert model[4:8] == b"TFL3"
    # Labels are a zip appended to the model, its offsets counted from the start of the file.
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        assert archive.namelist() == [LABELS_FILE]
        assert archive.read(LABELS_FILE) == b"cat\ndog\nbird\n"
    end_record = model.rindex(b"PK\x05\x06")
    central_directory = struct.unpack_from("<I", model, end_record + 16)[0]
    assert model[central_directory:central_directory + 4] == b"PK\x01\x02"


def test_litert_outputs_unchanged(float_model: bytes) -> None:
    images = np.random.default_rng(1).uniform(-1, 1, size=(4, 32, 32, 3)).astype(np.float32)
    expected = litert_probabilities(float_model, images)
    np.testing.assert_array_equal(litert_probabilities(with_metadata(float_model), images), expected)


def test_adding_again_replaces(float_model: bytes) -> None:
    first = with_metadata(float_model)
    assert with_metadata(first) == first  # reproducible, and nothing piles up
    second = with_metadata(first, name="renamed", labels=["a", "b", "c"])
    assert [name for name, _ in metadata_entries(second)].count(METADATA_NAME) == 1
    assert dict(metadata_entries(second)) == dict(metadata_entries(first))  # same buffer reused
    metadata = read_metadata(second)
    assert (metadata["name"], metadata["labels"]) == ("renamed", ["a", "b", "c"])
    with zipfile.ZipFile(io.BytesIO(second)) as archive:
        assert archive.namelist() == [LABELS_FILE]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"labels": []}, "labels must not be empty"),
    ({"labels": ["cat", "dog"]}, "2 labels for a model whose output has shape [1, 3]"),
    ({"labels": ["cat", "two\nlines", "bird"]}, "single line"),
    ({"mean": [1.0, 2.0], "std": [1.0, 2.0]}, "1 or 3 values"),
    ({"mean": [127.5], "std": [1.0, 1.0, 1.0]}, "1 or 3 values"),
    ({"std": [0.0]}, "std not 0"),
    ({"input_max": None}, "both input_min and input_max"),
    ({"input_min": 2.0}, "must be below input_max"),
    ({"name": ""}, "name must not be empty"),
])
def test_bad_arguments_are_input_errors(float_model: bytes, overrides: dict, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        with_metadata(float_model, **overrides)


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 a zip, not a model", b"\x08\x00\x00\x00ONNX" + bytes(32)])
def test_not_a_tflite_model(data: bytes) -> None:
    with pytest.raises(InputError, match="not a TFLite model"):
        with_metadata(data)
    with pytest.raises(InputError, match="not a TFLite model"):
        read_metadata(data)


def test_truncated_model(float_model: bytes) -> None:
    with pytest.raises(InputError, match="truncated or corrupt"):
        with_metadata(float_model[:100])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_metadata(float_model[:100])


# --- The stock client: MediaPipe Tasks' ImageClassifier, in its own virtualenv (tests/conftest.py). ---


def sample_image(index: int) -> np.ndarray:
    """Distinct, deterministic 32x32 RGB pictures: a coloured square on noise."""
    rng = np.random.default_rng(100 + index)
    pixels = rng.integers(0, 256, size=(32, 32, 3)).astype(np.uint8)
    pixels[8:24, 8:24] = [(230, 30, 30), (30, 200, 60), (40, 60, 230), (240, 220, 40)][index % 4]
    return pixels


@pytest.fixture(scope="module")
def mediapipe_run(float_model: bytes, mediapipe_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Classify the same images with MediaPipe for three models, in one subprocess."""
    folder = tmp_path_factory.mktemp("mediapipe")
    images = [sample_image(i) for i in range(4)]
    image_paths = []
    for i, pixels in enumerate(images):
        image_paths.append(str(folder / f"image_{i}.png"))
        Image.fromarray(pixels).save(image_paths[-1])
    models = {"scalar": with_metadata(float_model), "per_channel": with_metadata(float_model, **PER_CHANNEL),
              "no_metadata": float_model}
    jobs = []
    for name, data in models.items():
        (folder / f"{name}.tflite").write_bytes(data)
        jobs.append({"model": str(folder / f"{name}.tflite"), "images": image_paths})
    (folder / "jobs.json").write_text(json.dumps(jobs))
    (folder / "runner.py").write_text(MEDIAPIPE_RUNNER)
    run_or_fail([str(mediapipe_python), str(folder / "runner.py"), str(folder / "jobs.json"),
                 str(folder / "results.json")], "the MediaPipe ImageClassifier run", 300)
    results = json.loads((folder / "results.json").read_text())
    return {"images": np.stack(images), "models": models, "results": dict(zip(models, results))}


def test_mediapipe_classifies_with_our_metadata(mediapipe_run: dict) -> None:
    result = mediapipe_run["results"]["scalar"]
    assert result["ok"], result.get("error")
    preprocessed = (mediapipe_run["images"].astype(np.float32) - np.float32(SCALAR["mean"])) / np.float32(SCALAR["std"])
    expected = litert_probabilities(mediapipe_run["models"]["scalar"], preprocessed)
    for categories, probabilities in zip(result["images"], expected):
        assert {c["index"]: c["name"] for c in categories} == dict(enumerate(LABELS))
        top = max(categories, key=lambda c: c["score"])
        assert top["index"] == int(np.argmax(probabilities))
        scores = [next(c["score"] for c in categories if c["index"] == i) for i in range(len(LABELS))]
        np.testing.assert_allclose(scores, probabilities, atol=1e-4)


def test_mediapipe_refuses_the_model_without_metadata(mediapipe_run: dict) -> None:
    result = mediapipe_run["results"]["no_metadata"]
    assert not result["ok"]
    assert "NormalizationOptions" in result["error"]


def test_mediapipe_refuses_per_channel_normalization(mediapipe_run: dict) -> None:
    """Valid metadata (the LiteRT support library applies it), but MediaPipe Tasks take one mean and std."""
    result = mediapipe_run["results"]["per_channel"]
    assert not result["ok"]
    assert "Per-channel image normalization is not available" in result["error"]
