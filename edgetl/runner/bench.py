"""`edgetl bench`: run every exported model against the float model on labelled images.

For each artifact: accuracy parity with the Keras model (same images, same preprocessing), latency
in a fresh process per artifact (p50/p90/p99 per thread count, batch throughput, peak RSS), target
checks, and a gate. The reports (json, md, html) are written before a failed gate exits 1, and end
with a recommendation per target: the configuration to ship (edgetl.runner.ranking).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.artifacts.manifest import MANIFEST_NAME, now_utc, read_manifest, write_bytes_atomic
from edgetl.artifacts.run_dir import Run, load_images
from edgetl.artifacts.staging import recover_missing
from edgetl.backbones.spec import Preprocessing
from edgetl.data import dataset_index as dsi
from edgetl.errors import CheckFailedError, InputError, UsageError
from edgetl.network.model import MODEL_FILE
from edgetl.progress import say
from edgetl.runner import multitask_bench
from edgetl.runner.ranking import recommend
from edgetl.runner.workers import session_options, side_by_side_retimer, time_in_worker


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    threads: tuple[int, ...] = (1, 2)
    min_runs: int = 50
    warmup: int = 5
    min_seconds: float = 1.0
    throughput_batch: int = 8
    data: Path | None = None
    labels: Path | None = None
    mean: float | None = None
    std: float | None = None
    max_accuracy_drop: float | None = None
    min_agreement: float | None = None
    targets: tuple[str, ...] = ("x86-cpu",)
    out: Path | None = None
    xnnpack: bool = True  # LiteRT: the XNNPACK delegate (its default) or builtin kernels only
    ort_optimization: str = "all"  # ONNX Runtime graph optimization level
    # ONNX Runtime GPU providers each .onnx file is also benched on (a row each: measured where usable,
    # skipped with the reason where not). None: those usable here plus those the targets list (cuda).
    gpu_providers: tuple[str, ...] | None = None
    write_reports: bool = True  # False: the caller writes them (compress, after its repairs and recommendation)
    recommend: bool = True  # False: the caller recommends (compress, after its repairs)

    def problems(self) -> list[str]:
        found = []
        if not self.threads or min(self.threads) < 1:
            found.append("--threads: give positive thread counts, e.g. 1,2")
        if self.min_runs < 1 or self.warmup < 0 or self.min_seconds < 0:
            found.append("--runs must be >= 1, --warmup and --min-time >= 0")
        if self.throughput_batch < 1:
            found.append("--throughput-batch must be >= 1")
        if (self.mean is None) != (self.std is None):
            found.append("--mean and --std go together")
        if self.ort_optimization not in ("disable", "basic", "extended", "all"):
            found.append("--ort-optimization: one of disable, basic, extended, all")
        return found


@dataclasses.dataclass
class Entry:
    """One model file to benchmark, with what is known about it."""

    name: str
    path: Path
    run: Run | None
    labels: list[str]
    preprocessing: Preprocessing
    image_size: int
    quantize: str
    nchw: bool = False  # ONNX exported with --nchw: feed channels first
    tasks: tuple[tuple[str, tuple[str, ...]], ...] | None = None  # multi-task: (task, labels) per output


def collect(paths: list[str], options: BenchOptions) -> list[Entry]:
    entries: list[Entry] = []
    for raw in paths:
        path = Path(raw)
        recover_missing(path)  # an interrupted --overwrite may have left it aside
        if path.is_dir():
            manifest = read_manifest(path)  # integrity first: a tampered artifact is never measured
            if manifest.kind == "run":
                run = Run.open(path)
                artifacts = sorted(p for p in (path / "artifacts").glob("*")  # hidden: staging or rejected
                                   if not p.name.startswith(".") and (p / MANIFEST_NAME).is_file())
                if not artifacts:
                    raise InputError(f"{path}: this run has no artifacts; run `edgetl export` (or compress) first")
                entries += [_artifact_entry(a, read_manifest(a), run) for a in artifacts]
            else:
                entries.append(_artifact_entry(path, manifest, None))
        elif path.is_file():
            entries.append(_bare_entry(path, options))
        else:
            raise InputError(f"{path}: no such file or directory")
    names = [e.name for e in entries]
    for i, entry in enumerate(entries):  # keep names unique in the report
        if names.count(entry.name) > 1:
            entry.name = f"{entry.name}#{i + 1}"
    return entries


def _artifact_entry(folder: Path, manifest: Any, run: Run | None) -> Entry:
    """`manifest` was read (and the files verified) by the caller."""
    if manifest.kind != "artifact":
        raise InputError(f"{folder}: is an edgetl {manifest.kind}, not an artifact")
    if run is None and manifest.parent and Path(manifest.parent["path"]).is_dir():
        run = Run.open(manifest.parent["path"])
    model_file = manifest.sections["artifact"]["model_file"]
    contract = manifest.sections["backbone"]["preprocessing"]
    return Entry(name=manifest.sections["artifact"]["variant"], path=folder / model_file, run=run,
                 labels=list(manifest.sections["labels"]),
                 preprocessing=Preprocessing(tuple(contract["mean"]), tuple(contract["std"])),
                 image_size=int(manifest.sections["backbone"]["image_size"]),
                 quantize=manifest.sections["artifact"]["quantize"], nchw=bool(manifest.options.get("nchw")),
                 tasks=multitask_bench.artifact_tasks(manifest))


def _bare_entry(path: Path, options: BenchOptions) -> Entry:
    from edgetl.artifacts.inspection import inspect_model

    info = inspect_model(path)
    multitask_bench.refuse_bare(path, info)  # several outputs: only an artifact's manifest says what they are
    labels, mean, std = _labels_and_normalization(info)
    if options.labels:
        labels = [line for line in options.labels.read_text(encoding="utf-8").splitlines() if line.strip()]
    if options.mean is not None:
        mean, std = [options.mean], [options.std]
    if not labels:
        raise InputError(f"{path}: no labels in the file's metadata; pass --labels FILE (one class per line)")
    if mean is None:
        raise InputError(f"{path}: no normalization in the file's metadata; pass --mean and --std "
                         f"(model input = (pixel - mean) / std)")
    shape = info["inputs"][0]["shape"]
    size = shape[2] if len(shape) == 4 and shape[1] == 3 else shape[1]
    triple = (lambda v: tuple(float(x) for x in (v * 3 if len(v) == 1 else v)))
    dtypes = info.get("tensor_dtypes") or info.get("initializer_dtypes") or {}
    quantize = "int8" if "int8" in dtypes and info["format"] == "tflite" and info["inputs"][0]["dtype"] != "float32" \
        else "unknown"
    nchw = info["format"] == "onnx" and (info.get("metadata") or {}).get("layout") == "NCHW"
    return Entry(name=path.name, path=path, run=None, labels=labels, preprocessing=Preprocessing(triple(mean), triple(std)),
                 image_size=int(size), quantize=quantize, nchw=nchw)


def _labels_and_normalization(info: dict[str, Any]) -> tuple[list[str], list[float] | None, list[float] | None]:
    meta = info.get("metadata") or {}
    if info["format"] == "tflite":
        tflite = meta.get("tflite_metadata") or {}
        return list(tflite.get("labels") or []), tflite.get("mean"), tflite.get("std")
    labels = json.loads(meta["labels"]) if "labels" in meta else []
    contract = json.loads(meta["preprocessing"]) if "preprocessing" in meta else {}
    return labels, contract.get("mean"), contract.get("std")


def _evaluation_data(entries: list[Entry], options: BenchOptions) -> tuple[dsi.DatasetIndex, np.ndarray, list[str],
                                                                          Run | None]:
    """The images to evaluate on (an index whose `skipped` lists what was left out), their labels, the class
    names, and the run whose Keras model is the reference."""
    runs = {str(e.run.path.resolve()): e.run for e in entries if e.run is not None}
    run = next(iter(runs.values())) if len(runs) == 1 else None
    classes = entries[0].labels
    if any(e.labels != classes for e in entries):
        raise UsageError("the models have different labels; bench models of one task together")
    tasks = multitask_bench.bench_tasks(entries, options.data)
    if options.data:
        index = _readable_folder(options.data, tuple(classes))
    elif run is not None:
        index = run.splits[1]
    else:
        raise UsageError("--data DIR is needed (a folder with one sub-folder per class): "
                         "no single training run to take the validation split from")
    labels = multitask_bench.label_array(index) if tasks else np.asarray(index.labels)
    return index, labels, classes, run


def _readable_folder(folder: Path, classes: tuple[str, ...]) -> dsi.DatasetIndex:
    """--data's images, checked as training checks its own: what cannot be read is skipped and listed."""
    from edgetl.data.pipeline import check_images

    index = dsi.index_folder(folder, classes=classes)
    for entry in index.skipped:
        say(f"skipped {entry.path}: {entry.reason}")
    index = index.without(check_images(index.paths))
    if not index.paths:
        raise InputError(f"--data {folder}: no readable images in the class folders ({', '.join(classes)}); "
                         f"{len(index.skipped)} file(s) skipped")
    return index


def run_bench(paths: list[str], options: BenchOptions) -> dict[str, Any]:
    from edgetl.runner.machine import machine_info
    from edgetl.targets import open_session, runtime_availability
    from edgetl.targets.profiles import load_profile

    problems = options.problems()
    if problems:
        raise UsageError("; ".join(problems))
    profiles = [load_profile(name) for name in options.targets]
    entries = collect(paths, options)
    index, labels, classes, run = _evaluation_data(entries, options)
    image_paths = list(index.paths)
    say(f"bench: {len(entries)} model(s) on {len(image_paths)} labelled images")
    cache: dict[tuple[int, Preprocessing], np.ndarray] = {}

    def images_for(entry: Entry) -> np.ndarray:
        key = (entry.image_size, entry.preprocessing)
        if key not in cache:
            cache[key] = load_images(image_paths, entry.image_size, entry.preprocessing)
        return np.ascontiguousarray(cache[key].transpose(0, 3, 1, 2)) if entry.nchw else cache[key]

    reference, reference_info = None, None
    if run is not None:
        # The Keras model takes NHWC, whatever layout an exported file was given.
        reference = multitask_bench.predict(open_session(run.path / MODEL_FILE),
                                            images_for(dataclasses.replace(entries[0], nchw=False)), entries[0].tasks)
        reference_info = (multitask_bench.parity_of(reference, labels, classes, None, entries[0].tasks)
                          | {"name": "keras-float32"})
    availability = runtime_availability()
    report_entries = []
    with tempfile.TemporaryDirectory() as scratch:
        for entry in entries:
            report_entries.append(_bench_entry(entry, images_for(entry), labels, classes, reference, options,
                                               profiles, Path(scratch), availability))
            for provider in _gpu_providers(entry, options, profiles):
                report_entries.append(_bench_entry(entry, images_for(entry), labels, classes, reference, options,
                                                   profiles, Path(scratch), availability, provider))
            for runtime in _extra_runtimes(entry, profiles):
                report_entries.append(_bench_entry(entry, images_for(entry), labels, classes, reference, options,
                                                   profiles, Path(scratch), availability, runtime=runtime))
    report = {"schema": "edgetl.report", "schema_version": 1, "created": now_utc(), "machine": machine_info(),
              "runtimes": availability,
              "settings": {"threads": list(options.threads), "warmup": options.warmup, "min_runs": options.min_runs,
                           "min_seconds": options.min_seconds, "throughput_batch": options.throughput_batch,
                           "xnnpack": options.xnnpack, "ort_optimization": options.ort_optimization,
                           "data": str(options.data) if options.data else (f"{run.path} validation split" if run else None),
                           "images": len(image_paths), "targets": list(options.targets),
                           "skipped": [{"path": e.path, "reason": e.reason} for e in index.skipped]
                           if options.data else [],
                           "gate": {"max_accuracy_drop": options.max_accuracy_drop,
                                    "min_agreement": options.min_agreement}},
              "reference": reference_info, "artifacts": report_entries}
    if options.recommend:
        retime = side_by_side_retimer(entries, image_paths[0], options)
        report["recommendations"] = recommend(report_entries, profiles, retime)
    report["pareto"] = pareto(report_entries)
    out = options.out or ((run.path / "bench") if run is not None else Path("edgetl-bench"))
    report["report_dir"] = str(out)
    if options.write_reports:
        write_reports(report, out)
    return report


def raise_on_gate_failures(report: dict[str, Any]) -> None:
    """The CLI's exit 1: called after the reports are written, so a failed gate still leaves them."""
    failed = [a["name"] for a in report["artifacts"] if a["gate"] and not a["gate"]["passed"]]
    if failed:
        raise CheckFailedError(f"{len(failed)} artifact(s) failed the gate: {', '.join(failed)} "
                               f"(report in {report['report_dir']}/)")


def _gpu_providers(entry: Entry, options: BenchOptions, profiles: list[Any]) -> tuple[str, ...]:
    """The GPU providers an .onnx file gets a row for: those given, else those usable on this machine
    and those a requested target lists (skipped, with the reason, where they are not usable)."""
    from edgetl.targets.ort import GPU_PROVIDERS, provider_status

    if entry.path.suffix != ".onnx":
        return ()
    if options.gpu_providers is not None:  # a target's list may name the CPU provider too: it is the plain row
        return tuple(p for p in options.gpu_providers if p in GPU_PROVIDERS)
    usable = {p for p, reason in provider_status().items() if reason is None}
    wanted = {p for profile in profiles for p in profile.execution_providers}
    return tuple(p for p in GPU_PROVIDERS if p in usable | wanted)


def _extra_runtimes(entry: Entry, profiles: list[Any]) -> list[str]:
    """Runtimes besides the file's default that a requested target runs it in: TFLM for a microcontroller
    target's .tflite files, OpenVINO for an .onnx file on a target that lists it (x86-cpu)."""
    wanted = [runtime for profile in profiles for runtime in profile.usable_runtimes]
    extra = {".tflite": ("tflm",), ".onnx": ("openvino",)}.get(entry.path.suffix, ())
    return [runtime for runtime in extra if runtime in wanted]


def _bench_entry(entry: Entry, images: np.ndarray, labels: np.ndarray, classes: list[str],
                 reference: np.ndarray | None, options: BenchOptions, profiles: list[Any], scratch: Path,
                 availability: dict[str, Any], provider: str | None = None,
                 runtime: str | None = None) -> dict[str, Any]:
    """One row of the report: a file in one runtime (its default; a GPU provider of ONNX Runtime; TFLM)."""
    from edgetl.artifacts.inspection import float_op_count, inspect_model
    from edgetl.runner.parity import gate
    from edgetl.targets import open_session
    from edgetl.targets import DEFAULT_RUNTIME
    from edgetl.targets.checks import check_artifact
    from edgetl.targets.memory import estimate_peak_ram
    from edgetl.targets.ort import SHORT_NAMES, ProviderUnavailableError

    runtime = runtime or DEFAULT_RUNTIME[entry.path.suffix]
    name = f"{entry.name}@{SHORT_NAMES[provider]}" if provider else (
        f"{entry.name}@{runtime}" if runtime != DEFAULT_RUNTIME[entry.path.suffix] else entry.name)
    base = {"name": name, "path": str(entry.path), "format": entry.path.suffix[1:], "quantize": entry.quantize,
            "runtime": runtime, "bytes": entry.path.stat().st_size, "parity": None, "latency": None,
            "throughput": None, "peak_rss_bytes": None, "target_checks": {}, "gate": None, "skipped": None}
    if runtime == "onnxruntime":
        base["provider"] = provider or "CPUExecutionProvider"
    reason = availability.get(runtime, {}).get("unavailable") or \
        (availability.get(f"onnxruntime:{provider}", {}).get("unavailable") if provider else None)
    if reason:
        return base | {"skipped": reason}
    say(f"  {name}: parity on {len(images)} images")
    try:
        session = open_session(entry.path, **session_options(entry.path, options, provider, runtime))
    except ProviderUnavailableError as exc:  # the provider's libraries did not load: ORT fell back to the CPU
        return base | {"skipped": str(exc)}
    probabilities = multitask_bench.predict(session, images, entry.tasks, chunk=32)
    result = multitask_bench.parity_of(probabilities, labels, classes, reference, entry.tasks)  # per task for multi-task
    info = inspect_model(entry.path)
    peak = estimate_peak_ram(info)
    tflm = _tflm_facts(entry, peak, profiles, availability, announce=runtime == "tflm")
    if runtime == "tflm":  # one thread, one image at a time: as on the device
        options = dataclasses.replace(options, threads=(1,), throughput_batch=1)
    say(f"  {name}: latency at {', '.join(map(str, options.threads))} thread(s)"
        + (" (TFLM's reference kernels on this host, not device time)" if runtime == "tflm" else ""))
    timing = time_in_worker(entry.path, images, options, scratch, provider, runtime)
    return base | {"parity": result, "latency": timing["latency"], "throughput": timing["throughput"],
                   "peak_rss_bytes": timing["peak_rss_bytes"], "peak_ram_estimate": peak,
                   "float_ops": float_op_count(info), **({"tflm": tflm} if tflm else {}),
                   "target_checks": {p.name: check_artifact(p, info, peak, tflm) for p in profiles},
                   "gate": gate(result, options.max_accuracy_drop, options.min_agreement)}


def _tflm_facts(entry: Entry, peak: dict[str, Any], profiles: list[Any], availability: dict[str, Any],
                announce: bool) -> dict[str, Any] | None:
    """For a .tflite file benched for a TFLM target, with TFLM installed: whether it loads, and its real arena."""
    from edgetl.targets import tflm

    if entry.path.suffix != ".tflite" or not any(p.runtime == "tflm" for p in profiles) \
            or availability.get("tflm", {}).get("unavailable"):
        return None
    facts = tflm.facts(entry.path, peak["peak_activation_bytes"])
    if announce:
        say(f"  {entry.name}@tflm: " + (facts["load_problem"] or f"tensor arena {facts['arena_bytes']:,} bytes "
            f"(the smallest TFLM allocates in; estimate {peak['peak_activation_bytes']:,})"))
    return facts


def _latency_row(entry: dict[str, Any], threads: int) -> dict[str, Any] | None:
    """The measurement at the thread count closest to `threads` (fewer wins a tie)."""
    rows = entry.get("latency") or []
    return min(rows, key=lambda r: (abs(r["threads"] - threads), r["threads"])) if rows else None


def _p50(entry: dict[str, Any], threads: int) -> float | None:
    row = _latency_row(entry, threads)
    return row["p50_ms"] if row else None


def pareto(entries: list[dict[str, Any]]) -> list[str]:
    from edgetl.runner.report_render import pareto_front

    points = [{"name": e["name"], "latency_ms": _p50(e, 1), "accuracy": e["parity"]["accuracy"], "bytes": e["bytes"]}
              for e in entries if not e["skipped"] and e["latency"]]
    return pareto_front(points)


def write_reports(report: dict[str, Any], out: Path) -> None:
    from edgetl.runner.report_render import render_html, render_markdown

    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    write_bytes_atomic(out / "report.md", render_markdown(report).encode())
    write_bytes_atomic(out / "report.html", render_html(report).encode())
    say(f"wrote {out}/report.json, report.md, report.html")
