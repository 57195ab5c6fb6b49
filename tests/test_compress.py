"""`edgetl compress`: each recipe step on a tiny trained run, the repair ladder, the budget gate, resume.

The ladder test injects a layer int8 cannot represent: one channel of a linear bottleneck scaled by
1000 (and the next convolution's weights for it divided by 1000), so the float model computes the
same function while the per-tensor int8 activation scale of that tensor wipes out every other channel.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgetl.artifacts.manifest import read_manifest, write_manifest
from edgetl.artifacts.run_dir import Run, load_images
from edgetl.compression import cluster, prune
from edgetl.compression.finetune import apply_training_steps
from edgetl.compression.recipe import parse
from edgetl.compression.sensitivity import fallback_layers, layer_sensitivity
from edgetl.network.model import LABELS_FILE, MODEL_FILE, load_model
from tests.conftest import run_cli


def _int8_profile(name: str, runtimes: list[str], formats: list[str]) -> str:
    return f"""schema_version = 1
name = "{name}"
description = "test profile: int8 {' and '.join(formats)} only"
runtime = "{runtimes[0]}"
formats = {json.dumps(formats)}
runtimes = {json.dumps(runtimes)}
quantization = ["int8"]
threads = 1
"""


TFLITE_INT8_PROFILE = _int8_profile("tflite-int8-only", ["litert"], ["tflite"])
BOTH_INT8_PROFILE = _int8_profile("int8-both-formats", ["litert", "onnxruntime"], ["tflite", "onnx"])


def _profile(tmp_path: Path, name: str = "tflite-int8-only", text: str = TFLITE_INT8_PROFILE) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


def _copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("artifacts", "bench", "compress"))
    return to


@pytest.fixture(scope="module")
def sensitive_run(run, tmp_path_factory):
    """The trained fixture run with an outlier channel injected (same float function)."""
    target = _copy_run(run, tmp_path_factory.mktemp("sensitive") / "run")
    model = load_model(target / MODEL_FILE)
    bn = model.get_layer("block_16_project_BN")
    gamma, beta, mean, variance = bn.get_weights()
    gamma[0] *= 1000.0
    beta[0] *= 1000.0
    bn.set_weights([gamma, beta, mean, variance])
    conv = model.get_layer("Conv_1")
    weights = conv.get_weights()
    weights[0][:, :, 0, :] /= 1000.0
    conv.set_weights(weights)
    model.save(str(target / MODEL_FILE))
    write_manifest(target, read_manifest(target, verify=False), [MODEL_FILE, LABELS_FILE])
    return target


def test_prune_reaches_its_sparsity_and_2_by_4_structure(run):
    trained = apply_training_steps(Run.open(run), parse("prune:structure=2:4,epochs=1"))
    model, facts = trained.model, trained.facts
    head = model.layers[-1].get_weights()[0]  # Dense kernel (inputs, classes): 2 of every 4 inputs zero
    groups = head.reshape(-1, 4, head.shape[1])
    assert np.all(np.sum(groups == 0, axis=1) >= 2)
    assert prune.kernel_sparsity(model, ("Conv2D", "Dense")) >= 0.49
    assert prune.kernel_sparsity(model, ("DepthwiseConv2D",)) < 0.05  # structured modes leave depthwise dense
    assert facts["steps"][0]["name"] == "prune" and len(facts["steps"][0]["loss"]) == 1


def test_cluster_after_prune_keeps_both(run):
    trained = apply_training_steps(Run.open(run), parse("prune:sparsity=0.6,epochs=1+cluster:clusters=4,epochs=1"))
    model, facts = trained.model, trained.facts
    assert facts["steps"][1]["preserve_sparsity"] is True
    assert cluster.max_unique_values(model) <= 5  # 4 centroids, plus zero kept apart
    assert prune.kernel_sparsity(model) >= 0.55


def test_pqat_converts_to_full_int8_in_both_formats_and_keeps_its_zeros(run, tmp_path):
    """One PQAT training, two files. The .onnx one is built from QAT's weights as plain float layers: tf2onnx
    left TFMOT's mask products as graph inputs no caller could feed (compress crashed), and on a plain QAT graph
    its fake-quant nodes became QDQ pairs that ONNX Runtime quantized a second time."""
    import onnx
    from ai_edge_litert.interpreter import Interpreter
    from onnx import numpy_helper

    work = _copy_run(run, tmp_path / "run")
    result = run_cli("compress", str(work), "--target", _profile(tmp_path, "int8-both-formats", BOTH_INT8_PROFILE),
                     "--recipe", "prune:sparsity=0.5,epochs=2,learning_rate=0.001+qat:epochs=1",
                     "--max-accuracy-drop", "100", "--no-repair", "--verify-size", "18", "--threads", "1", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    slug = "prune_epochs2_learning_rate0.001-qat_epochs1"
    built = {c["name"]: c for c in report["compress"]["candidates"]}
    assert {built[f"tflite-int8-{slug}"]["status"], built[f"onnx-int8-{slug}"]["status"]} == {"built"}, built
    tflite_path = work / "artifacts" / f"tflite-int8-{slug}"
    manifest = read_manifest(tflite_path)  # verification passed: full-int8 structure checked on export
    assert manifest.sections["compress"]["training"]["steps"][1]["preserve"] == "prune"
    interpreter = Interpreter(model_path=str(tflite_path / "model.tflite"))
    kernels = [interpreter.get_tensor(d["index"]) for d in interpreter.get_tensor_details()
               if d["dtype"] == np.int8 and len(d["shape"]) == 4 and d["shape"][-1] > 1 and d["shape"][0] > 1]
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    assert zeros >= 0.4, f"PQAT lost the pruned zeros in .tflite: {zeros:.2f} of int8 conv weights are zero"

    onnx_path = work / "artifacts" / f"onnx-int8-{slug}"
    assert "float layers" in read_manifest(onnx_path).sections["compress"]["training"]["converted"]
    graph = onnx.load(str(onnx_path / "model.onnx")).graph
    produced_by = {output: node.op_type for node in graph.node for output in node.output}
    requantized = [n.name for n in graph.node if n.op_type == "QuantizeLinear" and
                   produced_by.get(n.input[0]) == "DequantizeLinear"]
    assert not requantized, f"{len(requantized)} tensors quantized twice, e.g. {requantized[0]}"
    kernels = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8
               and len(t.dims) == 4 and t.dims[0] > 1 and t.dims[1] > 1]
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    assert zeros >= 0.4, f"PQAT lost the pruned zeros in .onnx: {zeros:.2f} of int8 conv weights are zero"


def test_sensitivity_pass_finds_the_injected_layer(sensitive_run):
    opened = Run.open(sensitive_run)
    paths, _ = opened.sample("train", 16)
    ranked = layer_sensitivity(opened.model, load_images(paths, opened.image_size, opened.preprocessing))
    assert ranked[0]["layer"] == "block_16_project_BN", ranked[:3]
    assert ranked[0]["score"] > 10 * ranked[1]["score"]
    assert set(fallback_layers(opened.model, ["block_16_project_BN"])) >= {"block_16_project", "block_16_project_BN",
                                                                            "Conv_1"}


def test_ladder_repairs_int8_with_float_fallback_and_reports_it(sensitive_run, tmp_path):
    result = run_cli("compress", str(sensitive_run), "--target", _profile(tmp_path), "--max-accuracy-drop", "12",
                     "--verify-size", "18", "--threads", "1", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    plain = next(a for a in report["artifacts"] if a["name"] == "tflite-int8")
    assert not plain["gate"]["passed"], "the injected outlier should break plain int8"
    attempts = report["compress"]["repair"]
    assert attempts[-1]["passed"] and attempts[-1]["attempt"].startswith("float fallback")
    assert "Conv_1" in attempts[-1]["float_layers"]
    assert all(not a.get("passed") for a in attempts[:-1])
    assert report["recommended"]["name"] == attempts[-1]["name"]
    assert Path(report["recommended"]["path"], "manifest.json").is_file()
    markdown = (sensitive_run / "compress" / "report.md").read_text()
    assert "Repair ladder" in markdown and "block_16_project_BN" in markdown


def test_budget_missed_exits_1_with_the_best_found_and_reports(sensitive_run, tmp_path):
    result = run_cli("compress", str(sensitive_run), "--target", _profile(tmp_path), "--recipe", "int8",
                     "--max-accuracy-drop", "0.5", "--no-repair", "--verify-size", "18", "--threads", "1")
    assert result.returncode == 1, result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "best found: tflite-int8" in error[0] and "--max-accuracy-drop 0.5" in error[0]
    assert "no artifact meets the budget" in result.stdout
    report = json.loads((sensitive_run / "compress" / "report.json").read_text())
    assert report["compress"]["recommended"] is None


def test_resume_reuses_finished_candidates_and_rebuilds_damaged_ones(run, tmp_path):
    from edgetl.compression.compressor import CompressOptions, run_compress

    work = _copy_run(run, tmp_path / "run")
    options = CompressOptions(target="x86-cpu", recipes=("int8", "float"), max_accuracy_drop=100, repair=False,
                              verify_size=18, threads=(1,), min_runs=5, min_seconds=0.0)
    first = run_compress(work, options)
    assert {c["status"] for c in first["compress"]["candidates"]} == {"built"}
    int8_file = work / "artifacts" / "tflite-int8" / "model.tflite"
    built_at = int8_file.stat().st_mtime_ns
    damaged = work / "artifacts" / "onnx-none" / "model.onnx"
    damaged.write_bytes(damaged.read_bytes() + b"tampered")
    shutil.rmtree(work / "artifacts" / "tflite-none")  # as if interrupted before this candidate
    second = run_compress(work, options)
    status = {c["name"]: c["status"] for c in second["compress"]["candidates"]}
    assert status == {"tflite-int8": "reused", "onnx-int8": "reused", "tflite-none": "built", "onnx-none": "built"}
    assert int8_file.stat().st_mtime_ns == built_at
    read_manifest(work / "artifacts" / "onnx-none")  # rebuilt: hashes match again

    # A target with 8-bit I/O gets its own file, named like `edgetl export --io-dtype int8`'s, beside the other.
    profile = tmp_path / "int8-io.toml"
    profile.write_text(TFLITE_INT8_PROFILE.replace('"tflite-int8-only"', '"int8-io"') + 'io_dtype = "int8"\n')
    third = run_compress(work, dataclasses.replace(options, target=str(profile), recipes=("int8",)))
    assert [c["name"] for c in third["compress"]["candidates"]] == ["tflite-int8-int8io"]
    assert read_manifest(work / "artifacts" / "tflite-int8-int8io").options["io_dtype"] == "int8"
    assert int8_file.stat().st_mtime_ns == built_at


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
def test_batchnorm_folding_keeps_the_function(name):
    from edgetl.backbones import get_backbone
    from edgetl.compression.fold import fold_batchnorm
    from edgetl.network.model import build_classifier

    model = build_classifier(get_backbone(name), 32, 0.35 if name == "mobilenet_v2" else 0.75, 3, imagenet=False,
                             dropout=0.0)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # statistics far from the identity, so a wrong fold shows
        if type(layer).__name__ == "BatchNormalization":
            shapes = [w.shape for w in layer.get_weights()]
            layer.set_weights([rng.uniform(0.5, 1.5, shapes[0]), rng.normal(0, 0.1, shapes[1]),
                               rng.normal(0, 0.1, shapes[2]), rng.uniform(0.5, 1.5, shapes[3])])
    folded, count = fold_batchnorm(model)
    assert count > 30 and not any(type(layer).__name__ == "BatchNormalization" for layer in folded.layers)
    x = rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    assert np.abs(model.predict(x, verbose=0) - folded.predict(x, verbose=0)).max() < 1e-5


def test_training_steps_start_from_the_rate_that_trained_backbone_layers():
    """A head-only pretrained run's 1e-2 suits a linear layer, not a whole network: its steps derive from the
    fine-tune rate; a from-scratch run's from its scratch rate, unless it fine-tuned after."""
    from edgetl.compression.finetune import LEARNING_RATE_FRACTION, default_learning_rate

    head_only = {"weights": "imagenet", "fine_tune_epochs": 0, "learning_rate": 1e-2, "fine_tune_learning_rate": 1e-4}
    scratch = {"weights": "none", "fine_tune_epochs": 0, "learning_rate": 3e-3, "fine_tune_learning_rate": 1e-4}
    for step, fraction in LEARNING_RATE_FRACTION.items():
        assert default_learning_rate(head_only, step) == pytest.approx(1e-4 * fraction)
        assert default_learning_rate(scratch, step) == pytest.approx(3e-3 * fraction)
        assert default_learning_rate(scratch | {"fine_tune_epochs": 5}, step) == pytest.approx(1e-4 * fraction)
