"""edgetl: transfer-train, compress, export and verify lightweight image models for edge devices.

Importing edgetl imports no TensorFlow; the heavy work starts when a function is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgetl.version import __version__

if TYPE_CHECKING:
    from edgetl.artifacts.manifest import Manifest

__all__ = ["__version__", "bench", "bundle", "calibrate", "classify", "compress", "enroll", "evaluate", "export",
           "train", "verify"]


def train(data: str, output: str, **options: Any) -> "Manifest":
    """Train a transfer model on DATA and write the run directory OUTPUT.

    Keyword options are the fields of `edgetl.training.config.TrainConfig` (backbone, alpha, weights,
    image_size, epochs, fine_tune_epochs, fine_tune_layers, batch_size, val_split, val_dir, seed,
    augment, flip, on_bad_image, class_weights, head, regularizer, regularizer_strength, clipnorm,
    layer_lr_decay, learning_rate, fine_tune_learning_rate, feature_cache, distribute,
    mixed_precision, overwrite). Returns the run's manifest.
    Multi-task: `tasks` (CSV label columns, "species,color" or a sequence) and `task_weights`
    (one loss weight per task); see edgetl/training/multitask.py.
    """
    from edgetl.training.config import TrainConfig
    from edgetl.training.trainer import run_training

    return run_training(TrainConfig.create(data=data, output=output, **options))


def enroll(run: str, class_name: str, images: list[str]) -> "Manifest":
    """Add class `class_name` to the prototype-head run RUN (or replace its prototype) from a few
    image files, without training; returns the run's new manifest. Re-export the run afterwards."""
    from edgetl.training.prototypes import enroll as enroll_class

    return enroll_class(run, class_name, list(images))[0]


def verify(model: str, first: str, second: str) -> dict[str, Any]:
    """Are two image files the same thing? MODEL: a prototype or siamese run, or its exported embedding file.
    Returns the score, the calibrated threshold and `same` (score >= threshold)."""
    from edgetl.runner.oneshot import verify as verify_pair

    return verify_pair(model, first, second)


def classify(model: str, images: list[str]) -> list[dict[str, Any]]:
    """Each image's class by cosine to the prototypes of a prototype or siamese MODEL, or "unknown" when
    the best cosine is below the calibrated threshold."""
    from edgetl.runner.oneshot import classify as classify_images

    return classify_images(model, list(images))


def calibrate(run: str, data: str | None = None, far: float = 0.01, seed: int = 0) -> dict[str, Any]:
    """Re-calibrate RUN's verification and unknown-class thresholds at `far` on labelled images (DATA's
    class folders, or the run's validation split); returns the run's new `similarity` section."""
    from edgetl.runner.oneshot import calibrate as calibrate_run

    return calibrate_run(run, data, far, seed)[1]


def evaluate(model: str, data: str, **options: Any) -> dict[str, Any]:
    """N-way K-shot episodes and pair verification of MODEL's embedding on DATA (classes it never saw), beside
    the raw ImageNet features; options way, shot, queries, episodes, seed, baseline (edgetl/runner/episodes.py)."""
    from edgetl.runner.episodes import evaluate as run_episodes

    return run_episodes(model, data, **options)


def compress(run: str, **options: Any) -> dict[str, Any]:
    """Compress the training run RUN for a target within an accuracy budget.

    Keyword options are the fields of `edgetl.compression.compressor.CompressOptions` (target, recipes,
    max_accuracy_drop, repair, verify_size, seed, threads). Returns the report; its
    `["compress"]["recommended"]` is the artifact to ship, or None when nothing met the budget.
    """
    from edgetl.compression.compressor import CompressOptions, run_compress

    if isinstance(options.get("recipes"), str):
        options["recipes"] = (options["recipes"],)
    return run_compress(run, CompressOptions(**options))


def export(run: str, output: str | None = None, **options: Any) -> "Manifest":
    """Convert the training run RUN to one TFLite or ONNX file, verified against the float model, in
    RUN/artifacts/<format>-<quantize>/ (or OUTPUT); return the artifact's manifest.

    Keyword options are the fields of `edgetl.converters.base.ExportOptions` (format, quantize, io_dtype,
    calibration_size, verify_size, opset, nchw, seed, per_channel, float_fallback), as `edgetl export` takes them.
    """
    from edgetl.exporting.exporter import export_run

    return export_run(run, output, **options)


def bench(paths: str | list[str], **options: Any) -> dict[str, Any]:
    """Latency, memory and accuracy parity of every exported model under PATHS (runs, artifact folders or
    model files), as `edgetl bench` measures them; return the report (report.json's document).

    Keyword options are the fields of `edgetl.runner.bench.BenchOptions` (threads, targets, data, out, ...);
    sequences may be lists. A gate failure is in the report (`artifacts[i]["gate"]`), not an exception.
    """
    from edgetl.runner.bench import BenchOptions, run_bench

    for key in ("threads", "targets"):
        if isinstance(options.get(key), (list, int, str)):
            value = options[key]
            options[key] = (value,) if isinstance(value, (int, str)) else tuple(value)
    for key in ("data", "labels", "out"):
        if options.get(key) is not None:
            options[key] = Path(options[key])
    return run_bench([paths] if isinstance(paths, str) else list(paths), BenchOptions(**options))


def bundle(artifact: str, directory: str, **options: Any) -> "Manifest":
    """Write a deployment bundle of ARTIFACT (an artifact folder, or its model file) to DIRECTORY.

    The bundle holds the model file, labels.txt, model.json (input contract and preprocessing exactly as
    training did), test_vectors/ (validation images and the model's expected outputs) and standalone
    reference clients for the format, each with --selftest. Keyword options are the fields of
    `edgetl.bundling.bundler.BundleOptions` (overwrite, vectors, seed, selftest). Returns the bundle's manifest.
    """
    from edgetl.bundling.bundler import make_bundle

    return make_bundle(artifact, directory, **options)
