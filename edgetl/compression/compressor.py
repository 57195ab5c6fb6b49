"""`edgetl compress`: find the smallest/fastest artifact for a target within an accuracy budget.

1. Candidates: the recipes given, or the target's set (every quantization mode it takes, in every
   format it runs). Each is built (training steps, conversion, verification) into
   RUN/artifacts/<name>/ and kept by a key hashed from the parent run and every option, so an
   interrupted compress resumes where it stopped and a repeated one rebuilds nothing.
2. Every artifact goes through the runner (`edgetl bench`): parity with the float Keras model on the
   run's validation split, latency, target checks, and the budget as the gate.
3. Repair ladder, for each format whose int8 candidate misses the budget, stopping at the first
   attempt that passes: 4x calibration data -> per-tensor weights -> float fallback for the most
   sensitive layers (one tensor, then three) -> quantization-aware training.
4. The recommendation is the fastest artifact that passes the gate and the target's checks. If none
   does, the reports are still written and the command fails (exit 1) naming the best it found.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgetl.artifacts.manifest import MANIFEST_NAME, read_manifest
from edgetl.artifacts.run_dir import Run
from edgetl.compression import recipe as recipes
from edgetl.compression.recipe import Recipe
from edgetl.converters.base import ExportOptions
from edgetl.errors import CheckFailedError, EdgetlError, UsageError
from edgetl.progress import say
from edgetl.runner.bench import BenchOptions, collect, pareto, run_bench, write_reports
from edgetl.runner.ranking import recommend, runs_on
from edgetl.runner.workers import side_by_side_retimer
from edgetl.targets.profiles import load_profile

MODE_RECIPES = {"none": "float", "fp16": "fp16", "dynamic": "dynamic", "int8": "int8"}
DEFAULT_MAX_DROP = 0.5  # points: the bar edgetl aims at


@dataclasses.dataclass(frozen=True)
class CompressOptions:
    target: str = "x86-cpu"
    recipes: tuple[str, ...] = ()
    max_accuracy_drop: float = DEFAULT_MAX_DROP
    repair: bool = True
    verify_size: int = 64
    seed: int = 0
    threads: tuple[int, ...] | None = None  # default: 1 and the target's thread count
    min_runs: int = 30
    min_seconds: float = 0.5
    distribute: str = "none"  # training steps under a tf.distribute strategy (edgetl/training/distribute.py)

    def problems(self) -> list[str]:
        from edgetl.training import distribute

        found = distribute.problems(self.distribute)
        if self.max_accuracy_drop < 0:
            found.append("--max-accuracy-drop must be >= 0 (points of accuracy)")
        if self.verify_size < 1:
            found.append("--verify-size must be >= 1")
        if self.threads is not None and (not self.threads or min(self.threads) < 1):
            found.append("--threads: give positive thread counts, e.g. 1,2")
        return found


@dataclasses.dataclass
class Candidate:
    recipe: Recipe
    format: str
    name: str
    path: Path
    status: str = "pending"  # built | reused | failed
    reason: str | None = None
    attempt: str | None = None  # the repair step that made it, if any

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "format": self.format, "recipe": self.recipe.spec(), "quantize": self.recipe.quantize,
                "status": self.status, "reason": self.reason, "attempt": self.attempt, "path": str(self.path)}


def run_compress(run_path: str | Path, options: CompressOptions, dist: Any = None) -> dict[str, Any]:
    from edgetl.training import distribute

    problems = options.problems()
    if problems:
        raise UsageError("; ".join(problems))
    if dist is None and options.distribute != "none":
        dist = distribute.setup(options.distribute)  # before anything initializes TensorFlow
        # A non-chief worker compresses a temporary copy of the run (the same decisions, nothing kept).
        with distribute.worker_run(Path(run_path), dist) as where:
            return run_compress(where, options, dist)
    profile = load_profile(options.target)
    chosen = [recipes.parse(text) for text in options.recipes] or default_recipes(profile)
    run = Run.open(run_path)
    from edgetl.exporting.tasks import refuse_compress

    refuse_compress(run)
    builder = _Builder(run, options, profile, dist or distribute.SINGLE_PROCESS)
    candidates = [builder.candidate(r, fmt) for r in chosen for fmt in profile.formats]
    say(f"compress: {len(candidates)} candidate(s) for {profile.name}, budget {options.max_accuracy_drop} pts")
    for candidate in candidates:
        builder.build(candidate)
    built = [c for c in candidates if c.status != "failed"]
    if not built:
        raise CheckFailedError("no candidate could be built: " + "; ".join(f"{c.name}: {c.reason}" for c in candidates))
    report = _bench(built, run, profile, options, run.path / "compress")
    attempts: list[dict[str, Any]] = []
    if options.repair and "int8" in profile.quantization:
        for fmt in profile.formats:
            attempts += _repair(fmt, candidates, report, builder, profile, options)
    report["recommendations"] = recommend(report["artifacts"], [profile], _retimer(report, run, profile, options))
    report["pareto"] = pareto(report["artifacts"])  # the ladder's artifacts included
    _add_sizes(report)
    recommendation = report["recommendations"][profile.name]
    report["compress"] = {"target": profile.name, "profile": profile.source,
                          "max_accuracy_drop": options.max_accuracy_drop,
                          "candidates": [c.to_json() for c in candidates + builder.extra],
                          "repair": attempts, "sensitivity": builder.sensitivity[:10],
                          "recommended": _recommended(recommendation, report)}
    write_reports(report, Path(report["report_dir"]))
    from edgetl.compression.report import append_markdown

    append_markdown(report, Path(report["report_dir"]) / "report.md")
    return report


def raise_if_nothing_recommended(report: dict[str, Any]) -> None:
    """The CLI's exit 1, after the reports are written: never a silent candidate that misses the budget."""
    compress = report["compress"]
    if compress["recommended"] is not None:
        return
    usable = [a for a in report["artifacts"] if not a["skipped"] and not a["target_checks"].get(compress["target"])]
    best = max(usable, key=lambda a: a["parity"]["accuracy_delta_pts"], default=None)
    if best is None:
        raise CheckFailedError(f"{_closest_fit(report, load_profile(compress['profile']))} "
                               f"(report in {report['report_dir']}/)")
    raise CheckFailedError(f"no artifact meets --max-accuracy-drop {compress['max_accuracy_drop']} on "
                           f"{compress['target']}: best found: {best['name']} with an accuracy drop of "
                           f"{-best['parity']['accuracy_delta_pts']:.2f} pts (report in {report['report_dir']}/)")


# Measured (benchmarks/tflm.py): MobileNetV2 alpha 0.35 full int8 is 632,466 bytes; its TFLM arena 133,488 at 64 px.
SMALL_BACKBONE = "a smaller backbone, e.g. --backbone mobilenet_v2 --alpha 0.35, 0.63 MB in full int8"


def _closest_fit(report: dict[str, Any], profile: Any) -> str:
    """Nothing passes the target's checks: how far the closest file is from the flash and RAM budgets, and
    which knob would help."""
    measured = [a for a in report["artifacts"] if not a["skipped"] and runs_on(a, profile, report["artifacts"])]
    if not measured:
        return "no candidate could be measured"

    def ram(artifact: dict[str, Any]) -> tuple[int, str]:
        facts = artifact.get("tflm") or {}
        if facts.get("arena_bytes"):
            return facts["arena_bytes"], "TFLM's tensor arena (measured)"
        estimate = artifact.get("peak_ram_estimate") or {}
        if profile.weights_in_flash:
            return estimate.get("peak_activation_bytes", 0), "the estimated activation RAM"
        return estimate.get("peak_ram_bytes", 0), "the estimated peak RAM"

    over = []
    for artifact in measured:
        flash = max(0, artifact["bytes"] - (profile.max_model_bytes or artifact["bytes"]))
        memory, what = ram(artifact)
        over.append((flash + max(0, memory - (profile.max_ram_bytes or memory)), artifact, flash, memory, what))
    excess, closest, flash, memory, what = min(over, key=lambda o: o[0])
    if not excess:
        problems = closest["target_checks"].get(profile.name) or ["its target checks"]
        return f"no artifact passes the checks of {profile.name}: closest {closest['name']}: {problems[0]}"
    parts = []
    if flash:
        parts.append(f"{closest['bytes']:,} bytes of flash, {flash:,} over the {profile.max_model_bytes:,} budget "
                     f"(the weights set it, not the image size: {SMALL_BACKBONE})")
    if memory > (profile.max_ram_bytes or memory):
        parts.append(f"{what} of {memory:,} bytes, {memory - profile.max_ram_bytes:,} over the "
                     f"{profile.max_ram_bytes:,} budget (activations scale with the pixels: a smaller --image-size, "
                     f"e.g. 96 -> 64 px needs about 0.44x; or {SMALL_BACKBONE})")
    return (f"no artifact fits {profile.name}: the closest, {closest['name']}, needs " + "; and ".join(parts)
            + ". Retrain with those options and compress again")


def default_recipes(profile: Any) -> list[Recipe]:
    return [recipes.parse(MODE_RECIPES[mode]) for mode in profile.quantization]


class _Builder:
    """Builds candidates into artifact folders, reusing finished ones and trained models."""

    def __init__(self, run: Run, options: CompressOptions, profile: Any, dist: Any) -> None:
        self.run, self.options, self.dist = run, options, dist
        # A full-int8 target (microcontroller, Edge TPU) takes 8-bit input and output too.
        self.int8_io = profile.io_dtype or ("int8" if profile.int8_required else "float32")
        self.parent_sha = run.reference()["manifest_sha256"]
        self.trained: dict[str, Any] = {}  # finetune.Trained by training key
        self.extra: list[Candidate] = []  # made by the repair ladder
        self.sensitivity: list[dict[str, Any]] = []

    def candidate(self, recipe: Recipe, fmt: str, attempt: str | None = None) -> Candidate:
        slug, io_dtype = recipe.slug(), self.io_dtype(recipe, fmt)
        # Named like `edgetl export`'s folders: 8-bit I/O is a different file from float I/O, never built over it.
        io_suffix = "" if io_dtype == "float32" else f"-{io_dtype}io"
        name = f"{fmt}-{recipe.quantize}{io_suffix}" + (f"-{slug}" if slug else "")
        return Candidate(recipe, fmt, name, self.run.path / "artifacts" / name, attempt=attempt)

    def io_dtype(self, recipe: Recipe, fmt: str) -> str:
        return self.int8_io if recipe.quantize == "int8" and fmt == "tflite" else "float32"

    def export_options(self, candidate: Candidate) -> ExportOptions:
        ptq = candidate.recipe.step("ptq")
        int8 = candidate.recipe.quantize == "int8"
        io_dtype = self.io_dtype(candidate.recipe, candidate.format)
        return ExportOptions(format=candidate.format, quantize=candidate.recipe.quantize, io_dtype=io_dtype,
                             calibration_size=ptq.get("calibration") if ptq else 200,
                             per_channel=ptq.get("per_channel") if ptq else True,
                             float_fallback=tuple(ptq.get("fallback")) if ptq and int8 else (),
                             verify_size=self.options.verify_size, seed=self.options.seed)

    def key(self, candidate: Candidate) -> str:
        doc = {"parent": self.parent_sha, "export": dataclasses.asdict(self.export_options(candidate)),
               "training": _training_key(candidate.recipe)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=list).encode()).hexdigest()

    def _finished(self, candidate: Candidate, key: str) -> bool:
        if not (candidate.path / MANIFEST_NAME).is_file():
            return False
        try:
            manifest = read_manifest(candidate.path)  # verifies every file's hash
        except EdgetlError:
            return False
        recorded = manifest.sections.get("compress", {}).get("key")
        if recorded is not None:
            return recorded == key
        # An `edgetl export` artifact of this run with exactly these options is the same file.
        from edgetl.exporting.exporter import options_json

        same_options = manifest.options == options_json(self.export_options(candidate))
        return (not candidate.recipe.training_steps and same_options
                and (manifest.parent or {}).get("manifest_sha256") == self.parent_sha)

    def build(self, candidate: Candidate) -> Candidate:
        from edgetl.exporting.exporter import export_model

        key = self.key(candidate)
        if self._finished(candidate, key):
            candidate.status = "reused"
            say(f"  {candidate.name}: finished earlier, reused")
            return candidate
        try:
            model, training = self._model(candidate.recipe, candidate.format)
            export_model(self.run, model, self.export_options(candidate), candidate.path, candidate.name,
                         sections={"compress": {"key": key, "recipe": candidate.recipe.to_json(),
                                                "attempt": candidate.attempt, "training": training}},
                         accuracy_gated=True)
            candidate.status = "built"
        except CheckFailedError as exc:
            candidate.status, candidate.reason = "failed", str(exc)
            say(f"  {candidate.name}: failed: {exc}")
        return candidate

    def _model(self, recipe: Recipe, fmt: str) -> tuple[Any, dict[str, Any]]:
        from edgetl.converters import get_converter

        steps = recipe.training_steps
        if not steps:
            return self.run.model, {}
        cache_key = _training_key(recipe)
        if cache_key not in self.trained:
            from edgetl.compression.finetune import apply_training_steps

            say(f"  training steps {Recipe(steps).spec()}")
            self.trained[cache_key] = apply_training_steps(self.run, Recipe(steps), self.dist)
        trained = self.trained[cache_key]
        if get_converter(fmt).reads_fake_quant or trained.qat is None:
            return trained.model, trained.facts
        return trained.float_model(), trained.facts | {"converted": "QAT's trained weights as float layers, "
                                                                    "quantized by the converter (qat.float_copy)"}

    def sensitive_layers(self) -> list[dict[str, Any]]:
        if not self.sensitivity:
            from edgetl.artifacts.run_dir import load_images
            from edgetl.compression.sensitivity import layer_sensitivity

            paths, _ = self.run.sample("train", 64, self.options.seed)
            images = load_images(paths, self.run.image_size, self.run.preprocessing)
            say("  sensitivity pass: per-layer int8 activation noise on 64 training images")
            self.sensitivity = layer_sensitivity(self.run.model, images)
        return self.sensitivity


def _training_key(recipe: Recipe) -> str:
    """The training steps with every option: candidates that share it share one trained model."""
    return "+".join(s.name + repr(s.options) for s in recipe.training_steps)


def _bench_options(profile: Any, options: CompressOptions, out: Path) -> BenchOptions:
    # One thread and the target's count, but no more than this machine has: 4 threads timed on 2 cores
    # measure the oversubscription, not the model.
    threads = options.threads or tuple(sorted({1, min(profile.threads, os.cpu_count() or 1)}))
    return BenchOptions(threads=threads, min_runs=options.min_runs, min_seconds=options.min_seconds,
                        targets=(options.target,), max_accuracy_drop=options.max_accuracy_drop, out=out,
                        gpu_providers=tuple(profile.execution_providers), write_reports=False, recommend=False)


def _bench(candidates: list[Candidate], run: Run, profile: Any, options: CompressOptions, out: Path) -> dict[str, Any]:
    return run_bench([str(c.path) for c in candidates], _bench_options(profile, options, out))


def _retimer(report: dict[str, Any], run: Run, profile: Any, options: CompressOptions) -> Any:
    """The recommendation's side-by-side re-timing, over the artifacts that passed (the repairs' included)."""
    folders = list(dict.fromkeys(str(Path(a["path"]).parent) for a in report["artifacts"] if _passes(a, profile.name)))
    bench_options = _bench_options(profile, options, Path(report["report_dir"]))
    return side_by_side_retimer(collect(folders, bench_options), run.splits[1].paths[0], bench_options)


def _passes(entry: dict[str, Any], target: str) -> bool:
    return not entry["skipped"] and entry["gate"]["passed"] and not entry["target_checks"].get(target)


def _repair(fmt: str, candidates: list[Candidate], report: dict[str, Any], builder: _Builder, profile: Any,
            options: CompressOptions) -> list[dict[str, Any]]:
    """The ladder for one format; returns the attempts made, each with its numbers."""
    entries = {e["name"]: e for e in report["artifacts"]}
    int8 = [c for c in candidates if c.format == fmt and c.recipe.quantize == "int8" and c.name in entries]
    # The ladder repairs accuracy: not a file the target cannot run, and not when some int8 file passes.
    if not int8 or any(_passes(entries[c.name], profile.name) for c in int8) \
            or all(entries[c.name]["gate"]["passed"] for c in int8):
        return []
    base = int8[0]
    train_size = len(builder.run.splits[0].paths)
    ptq = base.recipe.step("ptq")
    calibration = min(train_size, 4 * (ptq.get("calibration") if ptq else 200))
    say(f"repair ({fmt}): int8 misses the budget: {'; '.join(entries[base.name]['gate']['reasons']) or 'target checks'}")
    ladder: list[tuple[str, str | None, str]] = [
        ("more calibration data", None if calibration <= (ptq.get("calibration") if ptq else 200) else
         f"ptq:mode=int8,calibration={calibration}", f"all {train_size} training images already calibrate"),
        ("per-tensor weights", f"ptq:mode=int8,calibration={calibration},per_channel=false", ""),
        ("float fallback, most sensitive tensor", "fallback:1", ""),
        ("float fallback, 3 most sensitive tensors", "fallback:3", ""),
        ("quantization-aware training", "qat", ""),
    ]
    attempts = []
    for title, spec, skip_reason in ladder:
        if spec and spec.startswith("fallback:") and profile.int8_required:
            spec, skip_reason = None, f"{profile.name} runs full-int8 models only"
        if spec is None:
            attempts.append({"attempt": title, "skipped": skip_reason})
            continue
        detail: dict[str, Any] = {}
        if spec.startswith("fallback:"):
            ranked = builder.sensitive_layers()
            from edgetl.compression.sensitivity import fallback_layers

            worst = [r["layer"] for r in ranked[:int(spec.split(":")[1])]]
            layers = fallback_layers(builder.run.model, worst)
            detail = {"sensitive_tensors": ranked[:len(worst)], "float_layers": list(layers)}
            spec = f"ptq:mode=int8,calibration={calibration},fallback={'|'.join(layers)}"
        candidate = builder.candidate(recipes.parse(spec), fmt, attempt=title)
        builder.extra.append(builder.build(candidate))
        record: dict[str, Any] = {"attempt": title, "recipe": candidate.recipe.spec(), "name": candidate.name, **detail}
        if candidate.status == "failed":
            attempts.append(record | {"passed": False, "reasons": [candidate.reason]})
            continue
        with tempfile.TemporaryDirectory() as scratch:
            single = _bench([candidate], builder.run, profile, options, Path(scratch))
        entry = single["artifacts"][0]
        report["artifacts"].append(entry)
        passed = _passes(entry, profile.name)
        reasons = entry["gate"]["reasons"] + [p for p in entry["target_checks"].get(profile.name, [])]
        attempts.append(record | {"passed": passed, "reasons": reasons,
                                  "accuracy_drop_pts": -entry["parity"]["accuracy_delta_pts"]})
        say(f"  repair {title}: {'passes' if passed else 'misses: ' + '; '.join(reasons)}")
        if passed:
            break
    return attempts


def _add_sizes(report: dict[str, Any]) -> None:
    """Raw and gzip-compressed bytes (where pruning and clustering pay), and each file's size vs the
    float32 file of the same format."""
    float_bytes = {e["format"]: e["bytes"] for e in report["artifacts"] if e["name"] in ("tflite-none", "onnx-none")}
    for entry in report["artifacts"]:
        data = Path(entry["path"]).read_bytes()
        entry["gzip_bytes"] = len(gzip.compress(data, compresslevel=9, mtime=0))
        base = float_bytes.get(entry["format"])
        entry["bytes_vs_float"] = round(entry["bytes"] / base, 4) if base else None


def _recommended(recommendation: dict[str, Any], report: dict[str, Any]) -> dict[str, Any] | None:
    if not recommendation.get("artifact"):
        return None
    entry = next(e for e in report["artifacts"] if e["name"] == recommendation["artifact"])
    return {"name": entry["name"], "path": str(Path(entry["path"]).parent), "model_file": entry["path"],
            "format": entry["format"], "quantize": entry["quantize"], "bytes": entry["bytes"],
            "gzip_bytes": entry["gzip_bytes"], "accuracy": entry["parity"]["accuracy"],
            "accuracy_drop_pts": -entry["parity"]["accuracy_delta_pts"], "p50_ms": recommendation["p50_ms"],
            "threads": recommendation["threads"], "thread_advice": recommendation["thread_advice"],
            "reason": recommendation["reason"]}
