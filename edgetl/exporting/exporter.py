"""`edgetl export`: one conversion of a run to TFLite or ONNX, with metadata, verified, as an artifact.

RUN/artifacts/<format>-<mode>/ holds the model file, labels.txt and a manifest with the parent run's
hash, the options, the representative-data fingerprint and every verification number. A file that
fails verification is not published as an artifact: it is kept beside it under a hidden
`.<name>.rejected/` folder, with no manifest, for inspection, and the command exits 1.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.artifacts.inspection import inspect_model
from edgetl.artifacts.locking import locked
from edgetl.artifacts.manifest import MANIFEST_NAME, Manifest, write_manifest
from edgetl.artifacts.run_dir import Run, load_images
from edgetl.artifacts.staging import staged_directory
from edgetl.converters import get_converter
from edgetl.converters.base import ConversionInput, ExportOptions
from edgetl.errors import CheckFailedError, UsageError
from edgetl.exporting import tasks as multitask
from edgetl.network.model import LABELS_FILE, predict_in_batches
from edgetl.progress import say
from edgetl.runner.verification import TOLERANCES, agreement, numeric_problems, structure_problems, task_agreement
from edgetl.targets import open_session
from edgetl.tf_env import versions
from edgetl.training.learning_check import verification_cause

EXPORT_DISTRIBUTIONS = ("onnx", "tf2onnx", "onnxruntime", "ai-edge-litert")


def export_run(run_path: str | Path, output: str | Path | None = None, **options: Any) -> Manifest:
    export_options = checked_options(**options)
    with locked(Path(run_path)):  # one writer per run: export and compress add artifacts to it
        run = Run.open(run_path)
        target = Path(output) if output else run.path / "artifacts" / export_options.variant
        return export_model(run, run.model, export_options, target)


def checked_options(**options: Any) -> ExportOptions:
    export_options = ExportOptions(**options)
    problems = export_options.problems()
    converter = get_converter(export_options.format) if not problems else None
    problems += converter.check(export_options) if converter else []
    if problems:
        raise UsageError("; ".join(problems))
    return export_options


def options_json(export_options: ExportOptions) -> dict[str, Any]:
    """The options as a manifest records them (JSON types: tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(export_options)))


def export_model(run: Run, model: Any, export_options: ExportOptions, target: Path, name: str | None = None,
                 sections: dict[str, Any] | None = None, accuracy_gated: bool = False) -> Manifest:
    """Convert `model` (the run's, or a compressed copy of it) into the artifact folder `target`,
    verified against `model` itself. `name` is the variant recorded (default: the options' variant).
    `accuracy_gated`: the caller gates accuracy itself (compress's budget), so a lossy mode's agreement
    shortfall is recorded in the manifest rather than rejected; structural problems always reject."""
    converter = get_converter(export_options.format)
    name = name or export_options.variant
    if accuracy_gated:  # compress: single-task only
        multitask.refuse_compress(run)
    if target.exists() and any(target.iterdir()) and not (target / MANIFEST_NAME).exists():
        raise UsageError(f"-o {target}: exists and is not an edgetl artifact; choose another path")
    model_name = f"model{converter.suffix}"
    calibration = None
    calibration_info: dict[str, Any] = {}
    if export_options.quantize == "int8":
        paths, _ = run.sample("train", export_options.calibration_size, export_options.seed)
        say(f"calibrating on {len(paths)} training images (stratified by class)")
        calibration = load_images(paths, run.image_size, run.preprocessing)
        calibration_info = {"images": len(paths), "split": "train", "stratified": True,
                            "fingerprint": _fingerprint(paths)}
    source = ConversionInput(model, run.image_size, run.labels, calibration)
    with staged_directory(target) as staging:
        say(f"converting {run.path} to {export_options.format} ({name})")
        facts = converter.convert(source, export_options, staging / model_name)
        _add_metadata(staging / model_name, run, export_options)
        shutil.copyfile(run.path / LABELS_FILE, staging / LABELS_FILE)
        task_files, task_section = multitask.copy_label_files(run, staging)  # multi-task: labels_<task>.txt
        verification = _verify(staging / model_name, run, model, export_options)
        side_files, extra = _prototype_files(converter, source, export_options, staging, run)
        embedding = extra.get("prototypes", {})  # the embedding file's verdict joins the model's
        verification["problems"] += embedding.pop("problems", []) + embedding.get("numeric_problems", [])
        verification["numeric_problems"] += embedding.pop("numeric_problems", [])
        if accuracy_gated and export_options.quantize != "none":
            verification["accuracy_warnings"] = verification.pop("numeric_problems")
            verification["problems"] = [p for p in verification["problems"] if p not in verification["accuracy_warnings"]]
        else:
            del verification["numeric_problems"]
        if verification["problems"]:
            rejected = target.parent / f".{target.name}.rejected"
            shutil.rmtree(rejected, ignore_errors=True)
            (staging / "verification.json").write_text(json.dumps(verification, indent=2))
            shutil.copytree(staging, rejected)
            raise CheckFailedError(f"{name} failed verification (file kept in {rejected}): "
                                   + "; ".join(verification["problems"]))
        manifest = Manifest(
            kind="artifact", files={}, options=options_json(export_options),
            metrics=verification["numbers"], versions=versions(EXPORT_DISTRIBUTIONS), parent=run.reference(),
            sections={"artifact": {"format": export_options.format, "quantize": export_options.quantize,
                                   "model_file": model_name, "variant": name},
                      "conversion": facts, "calibration": calibration_info,
                      "verification": {k: v for k, v in verification.items() if k != "numbers"},
                      "backbone": run.manifest.sections["backbone"], "labels": run.labels, **extra, **task_section,
                      **(sections or {})})
        written = write_manifest(staging, manifest, [model_name, LABELS_FILE, *task_files, *side_files])
    say(f"wrote {target}/ ({model_name}: {written.files[model_name].bytes:,} bytes, "
        f"top-1 agreement {verification['numbers']['top1_agreement']:.3f})")
    return written


def _prototype_files(converter: Any, source: ConversionInput, export_options: ExportOptions, staging: Path,
                     run: Run) -> tuple[list[str], dict[str, Any]]:
    """A prototype-head model also ships its embedding model and prototype table (apps add classes)."""
    from edgetl.training import prototypes

    if not prototypes.is_prototype_model(source.model):
        return [], {}
    paths, _ = run.sample("val", export_options.verify_size, export_options.seed)
    images = load_images(paths, run.image_size, run.preprocessing)
    facts = prototypes.export_embedding(converter, source, export_options, staging, images,
                                        run.manifest.sections.get("similarity"))
    if export_options.format == "tflite":  # what MediaPipe Tasks' ImageEmbedder reads
        from edgetl.converters.tflite_metadata import add_embedder_metadata
        from edgetl.version import __version__

        path, backbone = staging / facts["embedding_file"], run.manifest.sections["backbone"]
        low, high = run.preprocessing.input_range
        path.write_bytes(add_embedder_metadata(
            path.read_bytes(), name=f"edgetl {backbone['name']} embedder", version=__version__,
            description=f"{backbone['name']} image embedding of a {run.manifest.options.get('head')} run, "
                        f"{export_options.quantize}, made by edgetl", mean=list(run.preprocessing.mean),
            std=list(run.preprocessing.std), input_min=low, input_max=high))
    return [facts["embedding_file"], facts["table_file"]], {"prototypes": facts}


def _fingerprint(paths: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(sorted(paths)).encode(errors="surrogateescape")).hexdigest()


def _add_metadata(path: Path, run: Run, options: ExportOptions) -> None:
    backbone = run.manifest.sections["backbone"]
    description = (f"{backbone['name']} alpha {backbone['alpha']} image classifier, {multitask.describe(run)}, "
                   f"{options.quantize} ({options.format}), made by edgetl")
    if options.format == "tflite":
        from edgetl.version import __version__
        from edgetl.converters.tflite_metadata import add_metadata

        low, high = run.preprocessing.input_range
        path.write_bytes(add_metadata(path.read_bytes(), name=f"edgetl {backbone['name']}", version=__version__,
                                      description=description, mean=list(run.preprocessing.mean),
                                      std=list(run.preprocessing.std), labels=run.labels,
                                      input_min=low, input_max=high, outputs=multitask.tflite_metadata_outputs(run)))
    else:
        import onnx

        model = onnx.load(str(path))
        props = {"labels": json.dumps(run.labels), "preprocessing": json.dumps(backbone["preprocessing"]),
                 "layout": "NCHW" if options.nchw else "NHWC", "description": description,
                 "edgetl_parent": json.dumps(run.reference()), "edgetl_options": json.dumps(dataclasses.asdict(options)),
                 **multitask.onnx_props(run)}
        del model.metadata_props[:]
        for key, value in props.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(path))


def _verify(path: Path, run: Run, model: Any, options: ExportOptions) -> dict[str, Any]:
    problems: list[str] = []
    info = inspect_model(path)
    tasks = multitask.run_tasks(run)  # a multi-task run: one named output per task, each verified on its own
    problems += structure_problems(info, options, run.image_size, len(run.labels), tasks)
    if options.format == "onnx":
        import onnx

        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:  # onnx raises ValidationError and InferenceError
            problems.append(f"onnx.checker: {str(exc).splitlines()[0]}")
    paths, labels = run.sample("val", options.verify_size, options.seed)
    images = load_images(paths, run.image_size, run.preprocessing)
    reference = predict_in_batches(model, images)
    session = open_session(path)
    feed = images.transpose(0, 3, 1, 2) if options.nchw else images
    if tasks:
        numbers, numeric = task_agreement(tasks, reference, session.predict_all(np.ascontiguousarray(feed)),
                                         multitask.sample_labels(run, paths), options.quantize)
    else:
        numbers = agreement(reference, session.predict(np.ascontiguousarray(feed)), np.asarray(labels))
        numeric = numeric_problems(numbers, options.quantize)
        cause = verification_cause(run.manifest.metrics | {"weights": run.manifest.options.get("weights")},
                                   reference, np.asarray(labels), run.labels) if numeric else None
        numeric += [cause] if cause else []
    numbers["bytes"] = path.stat().st_size
    return {"problems": problems + numeric, "numeric_problems": numeric, "numbers": numbers, "tolerances": TOLERANCES[options.quantize],
            "runtime": session.runtime, "op_histogram": info["op_histogram"],
            "inputs": info["inputs"], "outputs": info["outputs"]}
