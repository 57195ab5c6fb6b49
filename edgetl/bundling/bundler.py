"""`edgetl bundle`: one artifact as a folder to hand to an app or a device, with its own proof that it works.

DIR/ holds the model file, labels.txt, model.json (the input contract: shape, dtype, layout,
normalization exactly as training did, int8 scales; the output's meaning; lineage), test_vectors/
(real validation images of the run and expected.json, the model file's own outputs on them, computed
with edgetl's preprocessing in the model's runtime), standalone reference clients for the format
(.tflite: client_litert.py, ANDROID.md, IOS.md; .onnx: client_onnxruntime.py, node/) and a
manifest.json written last. Before the folder is put in place, its Python client's --selftest runs in
a subprocess on the staged copy: a bundle whose client disagrees with expected.json is not published.

The manifest has kind "artifact" (the same verified model file, the same parent run), so `edgetl
inspect` and `edgetl bench` take a bundle as they take the artifact; its "bundle" section says where
it came from. (The package is `bundling`, not `bundle`: importing a submodule edgetl/bundle/ would replace
the function `edgetl.bundle` on the package; `exporting` is named so for `edgetl.export`.)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgetl.artifacts.manifest import MANIFEST_NAME, Manifest, read_manifest, sha256_of, write_manifest
from edgetl.errors import CheckFailedError, InputError, UsageError
from edgetl.network.model import LABELS_FILE

DEFAULT_VECTORS = 6
MAX_VECTORS = 64
VECTORS_DIR = "test_vectors"
EXPECTED_FILE = "expected.json"
SPEC_FILE = "model.json"
# Per format: the bundle's Python client (assembled from a runtime part and the common part), and the
# other files: their place in the bundle and their source in edgetl/bundling/clients/ (flat there: a node/
# folder would look like a Python package to setuptools).
CLIENTS: dict[str, dict[str, Any]] = {
    "tflite": {"python": ("client_litert.py", "runtime_litert.py"),
               "files": {"ANDROID.md": "ANDROID.md", "IOS.md": "IOS.md"}},
    "onnx": {"python": ("client_onnxruntime.py", "runtime_onnxruntime.py"),
             "more_python": [("client_openvino.py", "runtime_openvino.py")],  # x86: the same file in OpenVINO
             "files": {"node/client.js": "node_client.js", "node/package.json": "node_package.json",
                       "node/.npmrc": "node_npmrc"}},
}
# Self-test tolerance on probabilities (0..1), per quantization mode, and why. A quantized output
# tensor instead gets two of its own quanta (see _tolerance).
TOLERANCES = {
    "none": (1e-4, "float32: the same file and runtime on the same input tensor (the clients reproduce the "
                   "preprocessing to the bit); room for another runtime version's or thread count's summation order"),
    "fp16": (1e-3, "float16 weights: kernels of another runtime version may compute in another precision or order"),
    "dynamic": (1e-2, "activations quantized at run time, per tensor: a one-step rounding flip inside moves a "
                      "probability by about 1/256, so a few such steps"),
    "int8": (8e-3, "two steps of the int8 softmax output grid (1/256 in LiteRT, 1/255 in ONNX Runtime's QDQ): "
                   "another runtime version may round one activation the other way"),
}


@dataclasses.dataclass(frozen=True)
class BundleOptions:
    overwrite: bool = False  # replace DIR when it holds an earlier bundle (never any other folder)
    vectors: int = DEFAULT_VECTORS  # validation images in test_vectors/, stratified by class
    seed: int = 0  # which validation images
    selftest: bool = True  # run the Python client's --selftest on the staged bundle before publishing it

    def problems(self) -> list[str]:
        return [f"--vectors: must be 1..{MAX_VECTORS}"] if not 1 <= self.vectors <= MAX_VECTORS else []


def make_bundle(artifact: str | Path, directory: str | Path, **options: Any) -> Manifest:
    """Write the deployment bundle of ARTIFACT (an artifact folder, or the model file in one) to DIRECTORY."""
    from edgetl.artifacts.locking import locked
    from edgetl.artifacts.staging import staged_directory
    from edgetl.progress import say
    from edgetl.tf_env import versions

    bundle_options = checked_options(**options)
    folder, manifest = open_artifact(artifact)
    target = Path(directory)
    check_target(target, bundle_options.overwrite)
    run = _open_run(folder, manifest)
    kind = manifest.sections["artifact"]
    clients = CLIENTS[kind["format"]]
    with locked(folder), staged_directory(target) as staging:  # the artifact cannot be replaced meanwhile
        check_target(target, bundle_options.overwrite)  # again, now that DIR is locked
        say(f"bundling {folder} into {target}")
        shutil.copyfile(folder / kind["model_file"], staging / kind["model_file"])
        shutil.copyfile(folder / LABELS_FILE, staging / LABELS_FILE)
        from edgetl.bundling.spec import expected_outputs, model_spec, write_vectors

        spec = model_spec(staging / kind["model_file"], manifest, run, folder)
        vectors = write_vectors(run, bundle_options.vectors, bundle_options.seed, staging / VECTORS_DIR)
        tolerance = _tolerance(kind["quantize"], spec["output"].get("quantization"))
        expected = expected_outputs(staging / kind["model_file"], spec, run, staging / VECTORS_DIR, vectors)
        from edgetl.bundling.embedding import add_embedding

        pairs = add_embedding(staging, folder, manifest, run, spec,
                              [staging / VECTORS_DIR / v["file"] for v in vectors])
        _write_json(staging / SPEC_FILE, spec)
        own = _other_runtimes_outputs(clients, staging / kind["model_file"], spec, run, staging / VECTORS_DIR, vectors)
        _write_json(staging / VECTORS_DIR / EXPECTED_FILE, {
            "model_file": kind["model_file"], "computed_by": expected["computed_by"], "tolerance": tolerance,
            "vectors": expected["vectors"], **({"by_runtime": own} if own else {}),
            **({"verify": pairs} if pairs else {})})
        written = _write_clients(staging, kind, clients)
        if kind["format"] == "tflite" and spec["input"]["dtype"] == "int8" and spec["output"]["dtype"] == "int8":
            written += _write_firmware_sources(staging, kind, spec, run, folder)
        selftest = _selftest(staging, clients["python"][0], target) if bundle_options.selftest else None
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        bundle_section = {
            "artifact": {"path": str(folder.resolve()), "manifest_sha256": sha256_of(folder / MANIFEST_NAME),
                         "variant": kind["variant"]},
            "options": {"vectors": bundle_options.vectors, "seed": bundle_options.seed},
            "versions": versions(("onnxruntime", "ai-edge-litert")), "clients": written,
            "test_vectors": len(vectors), "tolerance": tolerance, "selftest": selftest}
        result = write_manifest(staging, dataclasses.replace(
            manifest, files={}, created="", sections=manifest.sections | {"bundle": bundle_section}), files)
    say(f"wrote {target}/ ({kind['model_file']}, {len(vectors)} test vectors, clients: {', '.join(written)})")
    return result


def checked_options(**options: Any) -> BundleOptions:
    try:
        bundle_options = BundleOptions(**options)
    except TypeError as exc:  # an option name that does not exist
        raise UsageError(f"bundle: {exc}") from None
    if bundle_options.problems():
        raise UsageError("; ".join(bundle_options.problems()))
    return bundle_options


def open_artifact(artifact: str | Path) -> tuple[Path, Manifest]:
    """The artifact folder (given as the folder or as its model file) and its verified manifest."""
    path = Path(artifact)
    folder = path.parent if path.is_file() and path.suffix in (".tflite", ".onnx") else path
    if not folder.is_dir():
        raise InputError(f"{path}: no such artifact folder; give RUN/artifacts/<variant> (made by `edgetl export` "
                         f"or `edgetl compress`)")
    manifest = read_manifest(folder)  # every file's sha256 checked
    if manifest.kind != "artifact" or "artifact" not in manifest.sections:
        raise InputError(f"{folder}: is an edgetl {manifest.kind}, not an artifact; export it first: "
                         f"edgetl export {folder} --format tflite --bundle DIR")
    if path.is_file() and path.name != manifest.sections["artifact"]["model_file"]:
        raise InputError(f"{path}: not the model file of the artifact {folder}; give the artifact folder")
    if manifest.sections.get("tasks"):
        raise UsageError(f"{folder}: a multi-task artifact; bundles (model.json, test vectors, clients) cover "
                         f"single-output classifiers only for now")
    return folder, manifest


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse a DIR that would lose someone's files: a file, a non-empty folder (unless --overwrite replaces
    an earlier bundle there; never another kind of folder)."""
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target}: exists and is a file; give a folder path for the bundle")
    if not (target.is_dir() and any(target.iterdir())):
        return
    if not overwrite:
        raise UsageError(f"{target}: exists and is not empty; pass --overwrite to replace an earlier bundle there, "
                         f"or choose another folder")
    try:
        doc = json.loads((target / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        doc = None
    if not (isinstance(doc, dict) and isinstance(doc.get("bundle"), dict)):
        raise UsageError(f"{target}: exists and is not an edgetl bundle; --overwrite replaces only bundles, "
                         f"choose another folder")


def _open_run(folder: Path, manifest: Manifest) -> Any:
    from edgetl.artifacts.run_dir import Run

    parent = (manifest.parent or {}).get("path")
    if not parent or not Path(parent).is_dir():
        raise InputError(f"{folder}: its training run {parent} is not there; a bundle's test vectors are images "
                         f"of the run's validation split, so the run (and its data) must be present")
    return Run.open(parent)


def _tolerance(quantize: str, output_quantization: dict[str, Any] | None) -> dict[str, Any]:
    if output_quantization:
        scale = output_quantization["scale"]
        return {"max_abs_diff": round(2 * scale + 1e-6, 8), "unit": "probability",
                "why": f"two quanta of the quantized output (scale {scale:.6g}): the client rounds its input like "
                       f"edgetl does, so only a runtime's integer kernels can differ"}
    value, why = TOLERANCES[quantize]
    return {"max_abs_diff": value, "unit": "probability", "why": why}


def _write_clients(staging: Path, kind: dict[str, Any], clients: dict[str, Any]) -> list[str]:
    """The format's clients and docs, from the package data in edgetl/bundling/clients/."""
    from importlib.resources import files

    source = files("edgetl.bundling.clients")
    common = source.joinpath("python_common.py").read_text(encoding="utf-8")
    python_clients = [clients["python"], *clients.get("more_python", [])]
    for python_name, runtime_part in python_clients:
        text = source.joinpath(runtime_part).read_text(encoding="utf-8")
        (staging / python_name).write_text(text + "\n\n" + common, encoding="utf-8")
        (staging / python_name).chmod(0o755)
    python_name = clients["python"][0]
    values = {"MODEL_FILE": kind["model_file"], "VARIANT": kind["variant"], "PYTHON_CLIENT": python_name}
    values |= _doc_values(staging)
    for name, source_name in clients["files"].items():
        out = staging / name
        out.parent.mkdir(parents=True, exist_ok=True)
        content = source.joinpath(source_name).read_text(encoding="utf-8")
        out.write_text(_fill(content, values) if name.endswith(".md") else content, encoding="utf-8")
    readme = _only_format(source.joinpath("README.md").read_text(encoding="utf-8"), kind["format"])
    (staging / "README.md").write_text(_fill(readme, values), encoding="utf-8")
    return [name for name, _ in python_clients] + [*clients["files"], "README.md"]


def _write_firmware_sources(staging: Path, kind: dict[str, Any], spec: dict[str, Any], run: Any,
                            folder: Path) -> list[str]:
    """A full-int8 .tflite file (the microcontroller targets'): the model as C++ source for TensorFlow Lite
    Micro firmware, in tflm/ (edgetl/bundling/c_source.py)."""
    from edgetl.artifacts.inspection import inspect_model
    from edgetl.bundling.c_source import write_c_sources
    from edgetl.progress import say
    from edgetl.targets import tflm
    from edgetl.targets.memory import estimate_peak_ram
    from edgetl.version import __version__

    model = staging / kind["model_file"]
    info = inspect_model(model)
    arena = None
    if tflm.unavailable_reason() is None:
        facts = tflm.facts(model, estimate_peak_ram(info)["peak_activation_bytes"])
        arena = facts["arena_bytes"]
        if facts["load_problem"]:
            say(f"warning: {folder}: {facts['load_problem']}; tflm/main.cc will not run as written")
    (staging / "tflm").mkdir()
    contract = {"version": __version__, "source": f"{kind['variant']} ({folder.resolve()})", "image_size": run.image_size,
                "labels": list(run.labels), "mean": list(run.preprocessing.mean), "std": list(run.preprocessing.std),
                "input_scale": spec["input"]["quantization"]["scale"],
                "input_zero_point": spec["input"]["quantization"]["zero_point"],
                "output_scale": spec["output"]["quantization"]["scale"],
                "output_zero_point": spec["output"]["quantization"]["zero_point"],
                "ops": sorted(info["op_histogram"]), "arena_bytes": arena}
    return [f"tflm/{name}" for name in write_c_sources(staging / "tflm", model.read_bytes(), contract)]


def _doc_values(staging: Path) -> dict[str, str]:
    spec = json.loads((staging / SPEC_FILE).read_text(encoding="utf-8"))
    pre, tensor = spec["preprocessing"], spec["input"]
    q = tensor.get("quantization") or {}
    out_q = spec["output"].get("quantization") or {}
    return {"HEIGHT": str(pre["resize"]["height"]), "WIDTH": str(pre["resize"]["width"]),
            "MEAN": ", ".join(f"{v:g}f" for v in pre["normalization"]["mean"]),
            "STD": ", ".join(f"{v:g}f" for v in pre["normalization"]["std"]),
            "INPUT_DTYPE": tensor["dtype"], "OUTPUT_DTYPE": spec["output"]["dtype"],
            "INPUT_SCALE": f"{q.get('scale', 0):.9g}", "INPUT_ZERO_POINT": str(q.get("zero_point", 0)),
            "OUTPUT_SCALE": f"{out_q.get('scale', 0):.9g}", "OUTPUT_ZERO_POINT": str(out_q.get("zero_point", 0)),
            "CLASSES": str(spec["output"]["classes"])}


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    return text


def _only_format(text: str, fmt: str) -> str:
    """Keep the `<!-- fmt -->...<!-- /fmt -->` parts of a template for this format and drop the others."""
    import re

    for other in CLIENTS:
        pattern = rf"<!-- {other} -->\n(.*?)<!-- /{other} -->\n"
        text = re.sub(pattern, (lambda m: m.group(1)) if other == fmt else "", text, flags=re.S)
    return text


def _selftest(staging: Path, client: str, target: Path) -> str:
    """Run the bundle's Python client --selftest on the staged copy; a failure publishes nothing."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        done = subprocess.run([sys.executable, str((staging / client).resolve()), "--selftest"], capture_output=True,
                              text=True, timeout=600, cwd=staging, env=env)
    except subprocess.TimeoutExpired:
        raise CheckFailedError(f"{client} --selftest did not finish in 600 s; nothing written to {target}") from None
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines()
        raise CheckFailedError(f"{client} --selftest failed on the new bundle (exit {done.returncode}); nothing "
                               f"written to {target}: " + " | ".join(lines[-8:]))
    return done.stdout.strip().splitlines()[-1]


def _other_runtimes_outputs(clients: dict[str, Any], model: Path, spec: dict[str, Any], run: Any, folder: Path,
                            vectors: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenVINO client's own expected outputs, when OpenVINO runs here. Another runtime's kernels round
    differently from the file's own runtime: measured on an AVX2 machine, OpenVINO's int8 output moved 0.25
    from ONNX Runtime's on a near-tie test vector, and its fp16 output 0.0036, beyond the tolerances meant
    for another version of the same runtime."""
    from edgetl.bundling.spec import expected_outputs
    from edgetl.targets.openvino import unavailable_reason

    if not any(name == "client_openvino.py" for name, _ in clients.get("more_python", [])) or unavailable_reason():
        return {}
    found = expected_outputs(model, spec, run, folder, vectors, runtime="openvino")
    return {"openvino": {"computed_by": found["computed_by"],
                         "probabilities": [row["probabilities"] for row in found["vectors"]]}}


def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
