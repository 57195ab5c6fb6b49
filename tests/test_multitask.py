"""Multi-task training (--tasks): one backbone, one named head per task, exported, verified and benched per task."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgetl
from edgetl.data import dataset_index as dsi
from edgetl.errors import InputError, UsageError
from tests.conftest import TINY, run_cli, write_image_folder

TASKS = ("pattern", "color")
COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220)}
PATTERNS = ("solid", "striped")


def picture(pattern: str, color: str, index: int, size: int = 32) -> Image.Image:
    """Both tasks easy to learn from scratch in a few epochs: the colour fills the picture (slightly varied
    brightness and noise); striped pictures have every fourth row dark."""
    rng = np.random.default_rng(1000 + index)
    pixels = np.clip(np.array(COLORS[color]) * (0.9 + 0.1 * rng.random()) + rng.integers(0, 8, (size, size, 3)), 0, 255)
    if pattern == "striped":
        pixels[::4] = 0
    return Image.fromarray(pixels.astype(np.uint8))


def write_multitask_csv(root: Path, per_combination: int = 12, header: str = "path,pattern,color") -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows, index = [header], 0
    for pattern in PATTERNS:
        for color in COLORS:
            for k in range(per_combination):
                name = f"img/{pattern}_{color}_{k}.png"
                picture(pattern, color, index).save(root / name)
                rows.append(f"{name},{pattern},{color}")
                index += 1
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root / "labels.csv"


def write_start_weights(data: Path, path: Path) -> Path:
    """A randomly initialized backbone whose BatchNorm statistics are measured on the images (precise BN).
    Started from it, training treats it like pretrained weights (BatchNorm frozen in inference mode), so the
    float model trains in a few epochs and behaves the same in training and inference: int8 then tracks it."""
    from edgetl.artifacts.run_dir import load_images
    from edgetl.backbones import get_backbone
    from edgetl.network.model import build_classifier
    from edgetl.tf_env import keras
    from edgetl.training import batchnorm

    keras().utils.set_random_seed(0)
    spec = get_backbone("mobilenet_v2")
    model = build_classifier(spec, 32, 0.35, 2, imagenet=False, dropout=0.0)
    images = load_images(sorted(str(p) for p in (data.parent / "img").glob("*.png")), 32, spec.preprocessing)
    batchnorm.recalibrate(model, [(images[i:i + 16], None) for i in range(0, len(images), 16)])
    model.save_weights(str(path))
    return path


@pytest.fixture(scope="module")
def multitask_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multitask")
    data = write_multitask_csv(root / "data")
    weights = write_start_weights(data, root / "start.h5")
    manifest = edgetl.train(str(data), str(root / "run"),
                            **TINY | {"weights": str(weights), "epochs": 0, "fine_tune_epochs": 10,
                                      "fine_tune_layers": "all", "fine_tune_learning_rate": 1e-3,
                                      "tasks": ",".join(TASKS), "task_weights": "1,0.5"})
    return root / "run", manifest


@pytest.fixture(scope="module")
def multitask_artifacts(multitask_run):
    from edgetl.exporting.exporter import export_run

    run, _ = multitask_run
    return {(fmt, mode): export_run(run, format=fmt, quantize=mode, calibration_size=64, verify_size=64)
            for fmt, mode in (("tflite", "none"), ("tflite", "int8"), ("onnx", "none"))}


# ------------------------------------------------------------------------------------------------ data


def test_multi_column_csv_gives_each_task_its_sorted_classes_and_splits_on_the_first(tmp_path):
    data = write_multitask_csv(tmp_path, per_combination=5)
    index = dsi.index_data(data, tasks=TASKS)
    assert index.tasks == TASKS and index.task_classes == (("solid", "striped"), ("blue", "green", "red"))
    assert index.classes == index.task_classes[0] and index.labels == tuple(row[0] for row in index.task_labels)
    for path, (pattern, color) in zip(index.paths, index.task_labels):
        assert Path(path).name.startswith(f"{index.task_classes[0][pattern]}_{index.task_classes[1][color]}_")
    train, val = dsi.stratified_split(index, 0.2, 0)
    assert val.counts() == {"solid": 3, "striped": 3}  # stratified on the first task
    assert sum(train.task_counts()["color"].values()) == 24 and len(train.task_counts()["color"]) == 3
    assert val.task_labels == tuple(index.task_labels[index.paths.index(p)] for p in val.paths)


def test_fingerprint_covers_every_label_column(tmp_path):
    data = write_multitask_csv(tmp_path, per_combination=3)
    before = dsi.index_data(data, tasks=TASKS).fingerprint()
    lines = data.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",green"  # only the second task's label changes
    data.write_text("\n".join(lines) + "\n")
    assert dsi.index_data(data, tasks=TASKS).fingerprint() != before


def test_a_row_without_every_task_label_names_its_line(tmp_path):
    data = write_multitask_csv(tmp_path, per_combination=2)
    data.write_text(data.read_text() + "img/solid_red_0.png,solid,\n")
    with pytest.raises(InputError, match=r"line 14: expected a path and a label for each of pattern, color"):
        dsi.index_data(data, tasks=TASKS)


def test_task_weights_are_parsed_into_per_output_loss_weights(tmp_path):
    from edgetl.training.config import TrainConfig
    from edgetl.training.multitask import loss_weights

    data = write_multitask_csv(tmp_path, per_combination=1)
    config = TrainConfig.create(data=data, output=tmp_path / "out", tasks="pattern, color", task_weights="2,0.5")
    assert config.tasks == TASKS and loss_weights(config) == {"pattern": 2.0, "color": 0.5}
    assert loss_weights(TrainConfig.create(data=data, output=tmp_path / "o", tasks=["color"])) == {"color": 1.0}


# ------------------------------------------------------------------------------------------- training


def test_run_has_one_named_head_per_task_and_records_per_task_metrics(multitask_run):
    from edgetl.network.model import backbone_layers, load_model

    run, manifest = multitask_run
    assert (run / "labels.txt").read_text() == "solid\nstriped\n"  # the first task's, for one-label tools
    assert (run / "labels_pattern.txt").read_text() == "solid\nstriped\n"
    assert (run / "labels_color.txt").read_text() == "blue\ngreen\nred\n"
    assert {"labels_pattern.txt", "labels_color.txt"} <= set(manifest.files)
    tasks = manifest.sections["tasks"]
    assert [(t["name"], t["classes"], t["loss_weight"]) for t in tasks] == [
        ("pattern", ["solid", "striped"], 1.0), ("color", ["blue", "green", "red"], 0.5)]
    metrics = manifest.metrics
    per_task = {name: metrics["tasks"][name]["val_accuracy"] for name in TASKS}
    assert metrics["val_accuracy"] == pytest.approx(np.mean(list(per_task.values())), abs=1e-4)
    assert min(per_task.values()) > 0.5, metrics  # both tasks learned something (chance: 0.5 and 0.33)
    assert set(metrics["tasks"]["color"]["per_class_accuracy"]) == {"blue", "green", "red"}
    assert "color/green" in metrics["per_class_accuracy"]
    last = manifest.sections["history"][-1]
    assert {"pattern_accuracy", "color_accuracy", "val_pattern_accuracy", "val_color_accuracy"} <= set(last)

    model = load_model(run / "model.keras")
    assert model.output_names == list(TASKS)
    head = [layer.name for layer in model.layers if layer not in backbone_layers(model) and layer.weights]
    assert sorted(head) == ["color", "pattern"] and "head_color_dropout" in [l.name for l in model.layers]
    assert [int(o.shape[-1]) for o in model.outputs] == [2, 3]


# --------------------------------------------------------------------------------------------- export


def test_exported_files_have_one_output_per_task_named_in_task_order(multitask_run, multitask_artifacts):
    from edgetl.artifacts.inspection import inspect_model
    from edgetl.targets import open_session

    run, _ = multitask_run
    for (fmt, mode), manifest in multitask_artifacts.items():
        folder = run / "artifacts" / f"{fmt}-{mode}"
        info = inspect_model(folder / f"model.{fmt}")
        assert [t["name"] for t in info["outputs"]] == list(TASKS), (fmt, mode)
        assert [t["shape"][1:] for t in info["outputs"]] == [[2], [3]]
        assert {"labels.txt", "labels_pattern.txt", "labels_color.txt"} <= set(manifest.files)
        assert [t["name"] for t in manifest.sections["tasks"]] == list(TASKS)
        assert [o.name for o in open_session(folder / f"model.{fmt}").outputs] == list(TASKS)
    tflite = (run / "artifacts" / "tflite-int8" / "model.tflite").read_bytes()
    with zipfile.ZipFile(run / "artifacts" / "tflite-int8" / "model.tflite") as packed:  # TFLite Metadata's label files
        assert packed.read("labels_color.txt").decode() == "blue\ngreen\nred\n"
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=tflite).get_signature_runner("serving_default")
    assert sorted(runner.get_output_details()) == sorted(TASKS)
    onnx_meta = inspect_model(run / "artifacts" / "onnx-none" / "model.onnx")["metadata"]
    assert json.loads(onnx_meta["tasks"]) == {"pattern": ["solid", "striped"], "color": ["blue", "green", "red"]}


def test_each_task_is_verified_against_the_keras_model(multitask_run, multitask_artifacts):
    from edgetl.artifacts.run_dir import Run, load_images
    from edgetl.network.model import load_model, predict_in_batches
    from edgetl.targets import open_session

    run, manifest = multitask_run
    for (fmt, mode), artifact in multitask_artifacts.items():
        numbers = artifact.metrics["tasks"]
        assert set(numbers) == set(TASKS)
        for task in TASKS:
            assert numbers[task]["images"] == sum(manifest.sections["dataset"]["val_counts"].values())  # all of them
            assert numbers[task]["top1_agreement"] >= (1.0 if mode == "none" else 0.9), (fmt, mode, numbers)
            if mode == "none":
                assert numbers[task]["max_abs_diff"] <= 1e-4
            assert numbers[task]["reference_accuracy"] == manifest.metrics["tasks"][task]["val_accuracy"]
        assert artifact.metrics["top1_agreement"] == pytest.approx(np.mean([numbers[t]["top1_agreement"] for t in TASKS]))
    # Independently of the recorded numbers: each output of the int8 file tracks its own Keras output.
    opened = Run.open(run)
    paths, _ = opened.sample("val", 100)
    images = load_images(paths, 32, opened.preprocessing)
    keras_outputs = predict_in_batches(load_model(run / "model.keras"), images)
    int8_outputs = open_session(run / "artifacts" / "tflite-int8" / "model.tflite").predict_all(images)
    for ours, theirs in zip(int8_outputs, keras_outputs):
        assert ours.shape == theirs.shape and np.mean(np.argmax(ours, 1) == np.argmax(theirs, 1)) >= 0.9


def test_inspect_names_the_task_outputs(multitask_run, multitask_artifacts):
    run, _ = multitask_run
    done = run_cli("inspect", str(run / "artifacts" / "tflite-int8"))
    assert done.returncode == 0, done.stderr
    outputs = done.stdout.split("outputs:")[1].split("ops:")[0]
    assert "pattern: float32 [1, 2]" in outputs and "color: float32 [1, 3]" in outputs, done.stdout


# ---------------------------------------------------------------------------------------------- bench


def test_bench_reports_parity_per_task(multitask_run, multitask_artifacts, tmp_path):
    from edgetl.runner.bench import BenchOptions, run_bench
    from edgetl.runner.parity import gate

    run, manifest = multitask_run
    report = run_bench([str(run)], BenchOptions(threads=(1,), min_runs=3, warmup=1, min_seconds=0.0,
                                                throughput_batch=2, out=tmp_path / "bench"))
    assert set(report["reference"]["tasks"]) == set(TASKS)
    measured = {a["name"]: a for a in report["artifacts"] if not a["skipped"]}
    assert {"tflite-none", "tflite-int8", "onnx-none"} <= set(measured)
    for name, artifact in measured.items():
        parity = artifact["parity"]
        for task in TASKS:
            numbers = parity["tasks"][task]
            assert numbers["accuracy"] == pytest.approx(manifest.metrics["tasks"][task]["val_accuracy"], abs=0.13)
            assert 0.9 <= numbers["top1_agreement"] <= 1.0
        assert parity["accuracy"] == pytest.approx(np.mean([parity["tasks"][t]["accuracy"] for t in TASKS]))
        assert artifact["latency"][0]["p50_ms"] > 0
        failed = gate(parity, None, 1.01)  # every task is gated on its own
        assert [r.split(":")[0] for r in failed["reasons"]] == ["task pattern", "task color"]
    markdown = (tmp_path / "bench" / "report.md").read_text()
    section = markdown.split("## Parity per task")[1]
    assert "| tflite-int8 | color |" in section and "| keras-float32 (reference) | pattern |" in section

    from click.testing import CliRunner

    from edgetl.cli import cli

    shown = CliRunner().invoke(cli, ["bench", str(run / "artifacts" / "onnx-none"), "--threads", "1", "--runs", "3",
                                      "--warmup", "1", "--min-time", "0", "-o", str(tmp_path / "cli-bench")])
    assert shown.exit_code == 0, shown.output
    assert "| onnx-none | pattern |" in shown.output.split("## Parity per task")[1]  # on the terminal too


def test_bench_refuses_what_it_cannot_label_per_task(multitask_run, multitask_artifacts, tmp_path):
    from edgetl.runner.bench import BenchOptions, run_bench

    run, _ = multitask_run
    folder = write_image_folder(tmp_path / "folder", classes=2, per_class=2)
    with pytest.raises(UsageError, match="--data: not supported for multi-task models"):
        run_bench([str(run)], BenchOptions(data=folder))
    with pytest.raises(UsageError, match="a model with 2 outputs"):
        run_bench([str(run / "artifacts" / "onnx-none" / "model.onnx")], BenchOptions(data=folder))
    with pytest.raises(UsageError, match="multi-task run, which compress does not support"):
        edgetl.compress(str(run), recipes="int8")


# ---------------------------------------------------------------------------------------- bad options


def test_bad_combinations_are_usage_errors_naming_every_option(tmp_path):
    data = write_multitask_csv(tmp_path / "data", per_combination=1)
    folder = write_image_folder(tmp_path / "folder", classes=2, per_class=1)
    done = run_cli("train", str(folder), "-o", str(tmp_path / "a"), "--weights", "none", "--tasks", "pattern,color",
                   "--task-weights", "1", "--head", "prototype", "--class-weights", "balanced")
    assert done.returncode == 2, done.stderr
    for expected in ("--tasks: needs a CSV DATA", "1 weight(s) for 2 task(s)", "--head prototype: not supported with "
                     "--tasks", "--class-weights balanced: not supported with --tasks"):
        assert expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and sum(line.startswith("error: ") for line in done.stderr.splitlines()) == 1
    done = run_cli("train", str(data), "-o", str(tmp_path / "b"), "--weights", "none", "--tasks", "pattern,shape,pattern",
                   "--task-weights", "1,0,-2", "--no-augment", "--feature-cache", "on", "--val-dir", str(folder))
    assert done.returncode == 2, done.stderr
    for expected in ("--tasks: unknown column(s) shape; ", "has pattern, color", "duplicate task(s) pattern",
                     "--task-weights: every weight must be a positive number", "--val-dir: not supported with --tasks",
                     "--feature-cache on: not supported with --tasks"):
        assert expected in done.stderr, done.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(("options", "message"), [
    ({"task_weights": "1,2"}, "--task-weights: needs --tasks"),
    ({"tasks": "pattern", "task_weights": "a,b"}, "--task-weights: expected comma-separated numbers"),
    ({"tasks": "pattern,image"}, "'image': task names become output and file names"),
    ({"tasks": "pattern, color", "head": "mlp"}, None),
])
def test_task_options_are_checked_before_any_work(tmp_path, options, message):
    from edgetl.training.config import TrainConfig

    data = write_multitask_csv(tmp_path, per_combination=1)
    if message is None:
        assert TrainConfig.create(data=data, output=tmp_path / "out", **options).tasks == TASKS
        return
    with pytest.raises(UsageError, match=message):
        TrainConfig.create(data=data, output=tmp_path / "out", **options)
