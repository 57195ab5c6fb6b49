"""The one-shot commands of the `edgetl` command line: verify, classify, calibrate, evaluate (edgetl/runner/oneshot.py,
edgetl/runner/episodes.py). Registered on the group in edgetl/cli.py; nothing heavy is imported until one runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgetl.process import keep_log_in

FAR_HELP = "Operating point: the share of different-class pairs accepted as the same (0.01: 1 %)."


def _emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2))


def _log_folder(path: str) -> Path:
    return Path(path).parent if Path(path).is_file() else Path(path)


@click.command()
@click.argument("model", type=click.Path(path_type=str))
@click.argument("first", type=click.Path(path_type=str))
@click.argument("second", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def verify(model: str, first: str, second: str, as_json: bool) -> None:
    """Are FIRST and SECOND the same thing? MODEL: a prototype or siamese run, or an exported embedding file.

    Prints the similarity score and `same` or `different` at the run's calibrated threshold (exit 0 either way)."""
    from edgetl.runner.oneshot import verify as verify_pair

    keep_log_in(_log_folder(model))
    result = verify_pair(model, first, second)
    if as_json:
        _emit_json(result)
    else:
        click.echo(f"{'same' if result['same'] else 'different'}: score {result['score']:.4f} "
                   f"{'>=' if result['same'] else '<'} threshold {result['threshold']:.4f} "
                   f"({result['scorer']}, set for {result['far']:g} false accepts, {result['tar']:.1%} true accepts)")


@click.command()
@click.argument("run", type=click.Path(path_type=str))
@click.option("--data", type=click.Path(path_type=str), default=None,
              help="Labelled images, one sub-folder per class (new classes are fine) [default: the run's "
                   "validation split].")
@click.option("--far", type=float, default=0.01, show_default=True, help=FAR_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Which pairs, when there are too many.")
@click.option("--json", "as_json", is_flag=True, help="Print the calibration as JSON on stdout.")
def calibrate(run: str, data: str | None, far: float, seed: int, as_json: bool) -> None:
    """Re-calibrate RUN's same/different threshold (and its unknown-class threshold) at --far on labelled images."""
    from edgetl.runner.oneshot import calibrate as calibrate_run

    keep_log_in(run)
    _, section = calibrate_run(run, data, far, seed)
    if as_json:
        _emit_json(section)
        return
    point = section["pairs"]
    click.echo(f"threshold {point['threshold']:.4f} at FAR {point['far']:.4f} (asked {far:g}): TAR {point['tar']:.4f}, "
               f"ROC AUC {point['roc_auc']:.4f}, EER {point['eer']:.4f} on {point['pairs']['same']} same / "
               f"{point['pairs']['different']} different pairs")
    if point.get("warning"):
        click.echo(f"warning: {point['warning']}")
    if "unknown" in section:
        unknown = section["unknown"]
        click.echo(f"unknown below cosine {unknown['threshold']:.4f}: keeps {unknown['known_accepted']:.1%} of known "
                   f"images, lets {unknown['unknown_accepted']:.1%} of unknown ones through; "
                   f"unknowns: {unknown.get('unknowns', 'not recorded')}")


@click.command()
@click.argument("model", type=click.Path(path_type=str))
@click.option("--data", required=True, type=click.Path(path_type=str),
              help="Labelled images of classes the model never saw, one sub-folder per class.")
@click.option("--way", type=int, default=5, show_default=True, help="Classes per episode.")
@click.option("--shot", type=int, default=1, show_default=True, help="Support images per class.")
@click.option("--queries", type=int, default=15, show_default=True, help="Query images per class, at most.")
@click.option("--episodes", type=int, default=600, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also evaluate the backbone's raw ImageNet features on the same episodes.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def evaluate(model: str, as_json: bool, **options: Any) -> None:
    """N-way K-shot accuracy (mean, 95 % interval) and verification AUC/EER of MODEL's embedding on new classes.

    MODEL: a run or an exported embedding file (an artifact of a prototype or siamese run)."""
    from edgetl.runner.episodes import evaluate as run_episodes
    from edgetl.runner.episodes import render_text

    keep_log_in(_log_folder(model))
    result = run_episodes(model, **options)
    click.echo(json.dumps(result, indent=2) if as_json else render_text(result))


@click.command()
@click.argument("model", type=click.Path(path_type=str))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def classify(model: str, images: tuple[str, ...], as_json: bool) -> None:
    """Classify IMAGES with a prototype or siamese MODEL (a run or an exported embedding file); an image whose
    best cosine to the classes is below the calibrated threshold is `unknown`."""
    from edgetl.runner.oneshot import classify as classify_images

    keep_log_in(_log_folder(model))
    results = classify_images(model, list(images))
    if as_json:
        _emit_json(results)
        return
    for row in results:
        note = f" (nearest {row['nearest']})" if row["label"] == "unknown" else ""
        click.echo(f"{row['image']}: {row['label']}{note}, cosine {row['cosine']:.4f}")


COMMANDS = (verify, classify, calibrate, evaluate)
