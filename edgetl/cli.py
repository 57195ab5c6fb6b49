"""The `edgetl` command line: a thin click layer over the Python API.

Errors become one clean line and an exit code in edgetl.process (the process around a command), and
only there (DESIGN.md). Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import click

from edgetl import __version__
from edgetl.cli_oneshot import COMMANDS
from edgetl.process import add_verbose_option, keep_log_in, on_interrupt, run_command_line
from edgetl.training.config import FINE_TUNE_LAYERS, FINE_TUNE_LEARNING_RATE


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgetl")
def cli() -> None:
    """Transfer-train, compress, export and verify lightweight image models for edge devices.

    \b
    Flow:  edgetl train DATA -o RUN  ->  edgetl compress RUN  ->  edgetl bench RUN
    Try:   edgetl demo   (the whole flow on built-in data, offline)
    """


def _emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2))


def _thread_list(ctx: Any, param: Any, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected comma-separated thread counts, e.g. 1,2") from None


@cli.command()
@click.argument("data", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(path_type=str), help="Run directory to create.")
@click.option("--backbone", default=None,
              help="efficientnet_lite0..4 | mobilenet_v2 | mobilenet_v3_small | mobilenet_v3_large | "
                   "mobilenet_v3_small_minimalistic | mobilenet_v3_large_minimalistic "
                   "[default: efficientnet_lite0, or the --weights RUN's].")
@click.option("--alpha", type=float, default=None, help="Width multiplier [default: 1.0, or the --weights RUN's].")
@click.option("--weights", default="imagenet", show_default=True,
              help="imagenet | none | a .h5/.keras weights file | a previous run directory (chained transfer) | "
                   "an official efficientnet-liteN checkpoint directory.")
@click.option("--image-size", type=int, default=None,
              help="Square input size in pixels [the --weights RUN's, else the backbone's: 224; "
                   "EfficientNet-Lite1-4: 240-300].")
@click.option("--epochs", type=int, default=None,
              help="First phase: the head on the frozen backbone (with --weights none: the whole network) "
                   "[default: enough epochs for 2,000 steps (from scratch 500), at least 5].")
@click.option("--fine-tune-epochs", type=int, default=None,
              help="Epochs fine-tuning the backbone after the head [default: enough for 300 steps, at least 5; "
                   "0 with --weights none].")
@click.option("--fine-tune-layers", default=FINE_TUNE_LAYERS, show_default=True,
              help="Backbone layers to unfreeze from the top (a number), or 'all'; BatchNorm stays frozen.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--val-split", type=float, default=0.2, show_default=True,
              help="Fraction of each class held out for validation (stratified, seeded).")
@click.option("--val-dir", type=click.Path(path_type=str), default=None,
              help="A separate validation folder (same class sub-folders) instead of --val-split.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--augment/--no-augment", default=None,
              help="Random flip, crop, rotation, brightness and contrast while backbone layers train "
                   "(fine-tuning, from scratch); the head on the frozen backbone sees the images as they are "
                   "[default: on with --weights none, off when fine-tuning pretrained weights].")
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="Include horizontal flips in augmentation (turn off for text, digits, asymmetric objects).")
@click.option("--on-bad-image", type=click.Choice(["skip", "fail"]), default="skip", show_default=True,
              help="Unreadable images: skip and list them, or stop.")
@click.option("--class-weights", type=click.Choice(["none", "balanced"]), default="none", show_default=True,
              help="balanced: weight the loss by inverse class frequency (for imbalanced data).")
@click.option("--allow-outside-root", is_flag=True,
              help="Let a CSV's paths lead outside the CSV's folder (after '..' and symlinks).")
@click.option("--trust-model", is_flag=True,
              help="Let a --weights .keras file run its own Python code (Lambda layers). Only for trusted files.")
@click.option("--distribute", type=click.Choice(["none", "mirrored", "multi-worker"]), default="none",
              show_default=True,
              help="mirrored: every local GPU (or 2 logical CPU devices); multi-worker: one process per machine, "
                   "cluster from the TF_CONFIG environment variable. --batch-size is the global batch.")
@click.option("--mixed-precision", is_flag=True,
              help="Compute in float16 on a GPU (mixed_float16; weights and the saved model stay float32).")
@click.option("--learning-rate", type=float, default=None,
              help="First phase's Adam rate [default: 1e-2 for the linear head on a frozen backbone, 1e-3 for the "
                   "other heads, 3e-3 from scratch].")
@click.option("--head", type=click.Choice(["linear", "mlp", "attention", "prototype", "siamese"]), default="linear",
              show_default=True,
              help="Classifier head: average pooling + linear, + a hidden layer (mlp), attention pooling, or "
                   "prototype (few-shot: cosine to per-class mean embeddings; add classes with `edgetl enroll`), or "
                   "siamese (one-shot verification: twin network on same/different pairs; `edgetl verify`).")
@click.option("--tasks", default=None,
              help="Multi-task: label columns of a CSV DATA (header path,<task>,...), comma-separated, e.g. "
                   "species,color; one head and one named output per task on the shared backbone.")
@click.option("--task-weights", default=None,
              help="With --tasks: each task's loss weight, comma-separated in --tasks order, e.g. 1,0.5 [default: 1 each].")
@click.option("--regularizer", type=click.Choice(["none", "l2", "l2sp"]), default="none", show_default=True,
              help="Weight penalty: l2 towards zero, or l2sp towards the starting (pretrained) weights.")
@click.option("--regularizer-strength", type=float, default=1e-3, show_default=True)
@click.option("--clipnorm", type=float, default=None, help="Clip each step's gradients to this global norm.")
@click.option("--layer-lr-decay", type=float, default=None,
              help="Per-layer learning-rate decay from head to stem, e.g. 0.9 (the stem moves least).")
@click.option("--fine-tune-learning-rate", type=float, default=FINE_TUNE_LEARNING_RATE, show_default=True)
@click.option("--feature-cache", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Train the frozen-backbone phase on backbone features computed once and cached on disk "
                   "($EDGETL_CACHE, default ~/.cache/edgetl). auto: whenever it can (pretrained weights, "
                   "not with --tasks or --distribute).")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's manifest as JSON on stdout.")
def train(data: str, output: str, as_json: bool, **options: Any) -> None:
    """Train a classifier on DATA: a folder with one sub-folder per class, or a CSV of path,label."""
    import edgetl

    keep_log_in(output)
    with on_interrupt("interrupted before the first epoch; nothing was written; re-run the same command"):
        manifest = edgetl.train(data, output, **options)
    if as_json:
        _emit_json({"path": output, **manifest.to_json()})
    else:
        _print_run_summary(output, manifest)


def _print_run_summary(output: str, manifest: Any) -> None:
    metrics = manifest.metrics
    click.echo(f"run: {output}")
    click.echo(f"validation accuracy: {metrics['val_accuracy']:.4f} on {metrics['val_images']} images "
               f"(best epoch {metrics['best_epoch']})")
    width = max(len(name) for name in metrics["per_class_accuracy"])
    for name, accuracy in metrics["per_class_accuracy"].items():
        shown = "n/a" if accuracy is None else f"{accuracy:.4f}"
        click.echo(f"  {name:<{width}}  {shown}")
    learning = metrics.get("learning", {})
    if learning.get("warning"):
        from edgetl.training.learning_check import advice

        click.echo(f"warning: {learning['warning']}; {advice(manifest.options)}")
    skipped = manifest.sections.get("dataset", {}).get("skipped", [])
    if skipped:
        click.echo(f"skipped images: {len(skipped)} (listed in {output}/manifest.json)")


@cli.command()
@click.option("-o", "--output", default="edgetl-demo", show_default=True, type=click.Path(path_type=str),
              help="Folder for the demo's data and run.")
@click.option("--epochs", type=int, default=None, help="Override the demo's training epochs (for a quick look).")
@click.option("--json", "as_json", is_flag=True, help="Print the demo's result as JSON on stdout.")
def demo(output: str, epochs: int | None, as_json: bool) -> None:
    """Train on built-in handwritten digits (offline) and print the result table."""
    from edgetl.demo import run_demo

    keep_log_in(output)
    result = run_demo(output, epochs=epochs)
    if as_json:
        _emit_json(result)
    else:
        click.echo(result["table"])


@cli.command()
@click.argument("run", type=click.Path(path_type=str))
@click.option("--format", "fmt", type=click.Choice(["tflite", "onnx"]), required=True)
@click.option("--quantize", type=click.Choice(["none", "fp16", "dynamic", "int8"]), default="none", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=str), default=None,
              help="Artifact directory [default: RUN/artifacts/<format>-<mode>].")
@click.option("--io-dtype", type=click.Choice(["float32", "int8", "uint8"]), default="float32", show_default=True,
              help="Input/output tensor type of an int8 TFLite model (uint8 for Edge TPU-style clients).")
@click.option("--calibration-size", type=int, default=200, show_default=True,
              help="Representative training images for int8 calibration, stratified by class.")
@click.option("--verify-size", type=int, default=64, show_default=True,
              help="Validation images the exported file is compared with the Keras model on.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset.")
@click.option("--nchw", is_flag=True, help="ONNX: take NCHW input (a Transpose in front of the NHWC graph).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=str), default=None,
              help="Then write a deployment bundle of the artifact to this folder (see `edgetl bundle`).")
@click.option("--bundle-overwrite", is_flag=True, help="With --bundle: replace an earlier bundle in that folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the artifact's manifest as JSON on stdout.")
def export(run: str, fmt: str, output: str | None, as_json: bool, bundle_dir: str | None, bundle_overwrite: bool,
           **options: Any) -> None:
    """Convert a training RUN to one verified TFLite or ONNX artifact (and, with --bundle, bundle it)."""
    from edgetl.exporting.exporter import export_run

    keep_log_in(run)
    if bundle_dir:  # refuse a bad --bundle folder before minutes of conversion
        from edgetl.bundling.bundler import check_target

        check_target(Path(bundle_dir), bundle_overwrite)
    elif bundle_overwrite:
        raise click.UsageError("--bundle-overwrite needs --bundle DIR")
    with on_interrupt("interrupted; no artifact was written; re-run the same command"):
        manifest = export_run(run, output, format=fmt, **options)
    bundled = None
    if bundle_dir:
        from edgetl.bundling.bundler import make_bundle

        folder = Path(output) if output else Path(run) / "artifacts" / manifest.sections["artifact"]["variant"]
        bundled = make_bundle(folder, bundle_dir, overwrite=bundle_overwrite)
    if as_json:
        _emit_json(manifest.to_json() | ({"bundle": _bundle_summary(bundle_dir, bundled)} if bundled else {}))
        return
    numbers = manifest.metrics
    click.echo(f"artifact: {manifest.sections['artifact']['variant']} ({numbers['bytes']:,} bytes)")
    click.echo(f"verified on {numbers['images']} validation images: top-1 agreement {numbers['top1_agreement']:.4f}, "
               f"max |diff| {numbers['max_abs_diff']:.2e}, accuracy {numbers['accuracy']:.4f} "
               f"(Keras {numbers['reference_accuracy']:.4f})")
    if bundled:
        _print_bundle(bundle_dir, bundled)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=str))
@click.argument("directory", type=click.Path(path_type=str))
@click.option("--vectors", type=int, default=6, show_default=True,
              help="Validation images in test_vectors/ (stratified by class), with the model's expected outputs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which validation images.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier bundle in DIRECTORY (never another folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the bundle's summary as JSON on stdout.")
def bundle(artifact: str, directory: str, as_json: bool, **options: Any) -> None:
    """Write a deployment bundle of an ARTIFACT to DIRECTORY: model, labels, model.json, test vectors, clients.

    \b
    The clients (Python LiteRT / ONNX Runtime, Node.js; Android and iOS docs) are standalone files that
    preprocess exactly as training did; each has --selftest against the test vectors."""
    import edgetl

    manifest = edgetl.bundle(artifact, directory, **options)
    if as_json:
        _emit_json(_bundle_summary(directory, manifest))
    else:
        _print_bundle(directory, manifest)


def _bundle_summary(directory: str, manifest: Any) -> dict[str, Any]:
    section = manifest.sections["bundle"]
    return {"path": directory, "files": sorted(manifest.files), "clients": section["clients"],
            "test_vectors": section["test_vectors"], "tolerance": section["tolerance"], "selftest": section["selftest"]}


def _print_bundle(directory: str, manifest: Any) -> None:
    section = manifest.sections["bundle"]
    client = section["clients"][0]
    click.echo(f"bundle: {directory} ({len(manifest.files)} files; clients: {', '.join(section['clients'])})")
    click.echo(f"{client} --selftest on {section['test_vectors']} test vectors: {section['selftest'] or 'not run'}")
    click.echo(f"try: python3 {Path(directory) / client} {Path(directory) / 'test_vectors' / '00.png'}")


@cli.command()
@click.argument("run", type=click.Path(path_type=str))
@click.option("--class", "class_name", required=True, help="The class to add, or to replace if RUN has it.")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def enroll(run: str, class_name: str, images: tuple[str, ...], as_json: bool) -> None:
    """Add a class to a prototype-head RUN from a few IMAGES (1-5 are enough), without retraining.

    Re-export afterwards: artifacts made before the enrollment keep the old classes."""
    from edgetl.training.prototypes import enroll as enroll_class

    keep_log_in(run)
    _, result = enroll_class(run, class_name, list(images))
    if as_json:
        _emit_json(result)
    else:
        click.echo(f"{'replaced' if result['replaced'] else 'added'} class {result['class']!r}: "
                   f"{result['classes']} classes (closest other class at cosine {result['closest_cosine']:.3f})")


@cli.command()
@click.argument("run", type=click.Path(path_type=str))
@click.option("--target", default="x86-cpu", show_default=True,
              help="Device profile (see `edgetl targets`) or a profile .toml file.")
@click.option("--recipe", "recipes", multiple=True,
              help="A recipe string or .toml file; repeat for several candidates. Steps prune, cluster, qat, ptq "
                   "joined by '+', options after ':', e.g. int8 | prune:sparsity=0.75+qat | cluster:clusters=8+qat. "
                   "[default: every quantization mode the target takes]")
@click.option("--max-accuracy-drop", type=float, default=0.5, show_default=True,
              help="Accuracy budget: points below the float model on the run's validation split.")
@click.option("--repair/--no-repair", default=True, show_default=True,
              help="When int8 misses the budget: more calibration, per-tensor, float fallback, then QAT.")
@click.option("--verify-size", type=int, default=64, show_default=True,
              help="Validation images each file is verified on right after conversion.")
@click.option("--threads", default=None, callback=_thread_list,
              help="Thread counts to time, e.g. 1,4 [default: 1 and the target's].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--distribute", type=click.Choice(["none", "mirrored", "multi-worker"]), default="none",
              show_default=True, help="Fine-tune the recipes' training steps under a tf.distribute strategy "
                                      "(as `edgetl train --distribute`; multi-worker reads TF_CONFIG).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout (see `recommended`).")
def compress(run: str, target: str, recipes: tuple[str, ...], max_accuracy_drop: float, repair: bool,
             verify_size: int, threads: tuple[int, ...] | None, seed: int, distribute: str, as_json: bool) -> None:
    """Compress a training RUN for a target within an accuracy budget; recommend the fastest that meets it."""
    from edgetl.artifacts.locking import locked
    from edgetl.compression.compressor import CompressOptions, raise_if_nothing_recommended, run_compress
    from edgetl.compression.report import render_text
    from edgetl.training.distribute import is_chief

    options = CompressOptions(target=target, recipes=recipes, max_accuracy_drop=max_accuracy_drop, repair=repair,
                              verify_size=verify_size, seed=seed, threads=threads, distribute=distribute)
    keep_log_in(run)
    # One writer per run: compress and export add artifacts to it (a non-chief worker writes to a copy).
    resume = (f"interrupted; re-run the same command to resume: the artifacts already in {run}/artifacts "
              "are checked and reused")
    with on_interrupt(resume), locked(Path(run)) if is_chief(distribute) else contextlib.nullcontext():
        report = run_compress(run, options)
    if as_json:
        _emit_json(report | {"recommended": report["compress"]["recommended"]})
    else:
        click.echo(render_text(report))
    raise_if_nothing_recommended(report)


@cli.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the inspection as JSON on stdout.")
def inspect(path: str, as_json: bool) -> None:
    """Show what is inside a .tflite/.onnx file or an artifact directory."""
    from edgetl.runner.inspect_report import inspect_path, render_text

    report = inspect_path(path)
    if as_json:
        _emit_json(report)
    else:
        click.echo(render_text(report))


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Labelled images (one sub-folder per class) [default: the run's validation split].")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Class names, one per line, for bare files without label metadata.")
@click.option("--mean", type=float, default=None, help="Input normalization for bare files: (pixel - mean) / std.")
@click.option("--std", type=float, default=None)
@click.option("--threads", default="1,2", show_default=True, callback=_thread_list, help="Thread counts to time.")
@click.option("--runs", "min_runs", type=int, default=50, show_default=True, help="Minimum timed runs.")
@click.option("--min-time", "min_seconds", type=float, default=1.0, show_default=True,
              help="Minimum timed seconds per measurement.")
@click.option("--warmup", type=int, default=5, show_default=True)
@click.option("--throughput-batch", type=int, default=8, show_default=True)
@click.option("--target", "targets", multiple=True, default=["x86-cpu"], show_default=True,
              help="Target profile(s) to check against and recommend for (see `edgetl targets`).")
@click.option("--xnnpack/--no-xnnpack", default=True, show_default=True,
              help="LiteRT: use the XNNPACK delegate (its default) or builtin kernels only.")
@click.option("--ort-optimization", type=click.Choice(["disable", "basic", "extended", "all"]), default="all",
              show_default=True, help="ONNX Runtime graph optimization level.")
@click.option("--max-accuracy-drop", type=float, default=None, help="Gate: max accuracy drop vs float, in points.")
@click.option("--min-agreement", type=float, default=None, help="Gate: min top-1 agreement with float (0-1).")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Report folder [default: RUN/bench, or ./edgetl-bench for bare files].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def bench(paths: tuple[str, ...], as_json: bool, targets: tuple[str, ...], **options: Any) -> None:
    """Latency, memory and accuracy parity of every exported model: a run, artifacts or .tflite/.onnx files."""
    from edgetl.runner.bench import BenchOptions, raise_on_gate_failures, run_bench
    from edgetl.runner.report_render import render_markdown

    with on_interrupt("interrupted; no report was written; re-run the same command"):
        report = run_bench(list(paths), BenchOptions(targets=tuple(targets), **options))
    keep_log_in(report["report_dir"])
    if as_json:
        _emit_json(report)
    else:
        click.echo(render_markdown(report))
    raise_on_gate_failures(report)


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the profile(s) as JSON on stdout.")
def targets(name: str | None, as_json: bool) -> None:
    """List the device target profiles, or show one."""
    import dataclasses

    from edgetl.targets.profiles import list_profiles, load_profile

    profiles = [load_profile(name)] if name else list_profiles()
    if as_json:
        docs = [dataclasses.asdict(p) for p in profiles]
        _emit_json(docs[0] if name else docs)
        return
    for profile in profiles:
        if name:
            for key, value in dataclasses.asdict(profile).items():
                click.echo(f"{key:<20} {value}")
        else:
            click.echo(f"{profile.name:<11} {profile.runtime:<12} {','.join(profile.quantization):<22} {profile.description}")


for _command in COMMANDS:
    cli.add_command(_command)
add_verbose_option(cli)


def main() -> None:
    run_command_line(cli)
