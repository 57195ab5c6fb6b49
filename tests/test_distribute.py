"""`--distribute`: TF_CONFIG checks, mirrored on logical CPU devices, two real worker processes on
127.0.0.1 (CPU only) against a single process, and what happens when one worker is killed.

The equivalence runs train only the head on a frozen backbone whose BatchNorm statistics were
estimated on the data (a stand-in for pretrained weights), with dropout 0: then a distributed step is
mathematically the single-process step (the same global batch of 8, split 4 + 4, gradients summed), and
the histories must agree to float rounding. With trainable BatchNorm (fine-tuning from scratch) each
replica normalizes with its own 4-image statistics, so a distributed run is a different computation;
that case is only checked to complete.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgetl
from edgetl.artifacts.manifest import read_manifest
from edgetl.errors import EdgetlError, UsageError
from edgetl.training import distribute
from tests.conftest import TINY, run_cli, write_image_folder

HEAD_ONLY = TINY | {"epochs": 3, "learning_rate": 0.01, "dropout": 0.0}
# The API in a fresh process (dropout is not a CLI option); prints the manifest's metrics and history.
API_WORKER = ("import json, sys, edgetl; m = edgetl.train(sys.argv[1], sys.argv[2], **json.loads(sys.argv[3])); "
              "print(json.dumps({'metrics': m.metrics, 'history': m.sections['history'], "
              "'distribute': m.sections['distribute']}))")
LOSS_TOLERANCE = 2e-3  # float summation order: all-reduce vs one batch (measured: equal to 4 decimals)
WORKER_TIMEOUT = 300


# --- TF_CONFIG and options: no TensorFlow needed ---

@pytest.mark.parametrize("text, expected", [
    (None, "TF_CONFIG environment variable is not set"),
    ("", "is not set"),
    ("{not json", "is not valid JSON"),
    ('{"cluster": {"worker": ["h:1"]}}', "needs a 'cluster' object and a 'task' object"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "non-empty list"),
    ('{"cluster": {"worker": ["h:1", "h:99999"]}, "task": {"type": "worker", "index": 0}}', "port in 1..65535"),
    ('{"cluster": {"worker": ["h:1", "h:1"]}, "task": {"type": "worker", "index": 0}}', "listed twice: h:1"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}', "task.index 2 is not an index"),
    ('{"cluster": {"worker": ["h:1"], "ps": ["h:2"]}, "task": {"type": "worker", "index": 0}}', "'ps'"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "evaluator", "index": 0}}', "task.type must be"),
    ('{"cluster": {"worker": ["h:1"], "chief": ["h:2", "h:3"]}, "task": {"type": "worker", "index": 0}}',
     "exactly one address"),
])
def test_bad_tf_config_is_a_usage_error_naming_the_problem(text, expected):
    with pytest.raises(UsageError, match="--distribute multi-worker") as caught:
        distribute.parse_tf_config(text)
    assert expected in str(caught.value)


def test_chief_is_worker_0_unless_a_chief_task_is_listed():
    two = {"worker": ["h:1", "h:2"]}
    assert [distribute.parse_tf_config(json.dumps({"cluster": two, "task": {"type": "worker", "index": i}})).is_chief
            for i in (0, 1)] == [True, False]
    with_chief = {"chief": ["c:1"], "worker": ["h:1"]}
    parsed = distribute.parse_tf_config(json.dumps({"cluster": with_chief, "task": {"type": "worker", "index": 0}}))
    assert not parsed.is_chief and parsed.workers == 2
    assert distribute.parse_tf_config(json.dumps({"cluster": with_chief, "task": {"type": "chief"}})).is_chief


def test_cli_exits_2_with_the_tf_config_problem_before_loading_anything(tmp_path):
    data = write_image_folder(tmp_path / "data", per_class=2)
    started = time.perf_counter()
    done = run_cli("train", str(data), "-o", str(tmp_path / "run"), "--weights", "none",
                   "--distribute", "multi-worker", env={"TF_CONFIG": '{"cluster": {"worker": ["h:1"]}, "task": {}}'})
    assert done.returncode == 2, done.stderr
    assert "error: --distribute multi-worker: the TF_CONFIG environment variable is invalid: task.type" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()
    assert time.perf_counter() - started < 20  # checked before TensorFlow starts work


def test_unknown_strategy_and_a_batch_that_does_not_split_are_usage_errors():
    with pytest.raises(UsageError, match="--distribute: must be one of none, mirrored, multi-worker"):
        edgetl.train("data", "out", weights="none", distribute="ring")
    with pytest.raises(UsageError, match=r"--batch-size 7 is the global batch; .* 2 replicas \(e\.g\. 6 or 8\)"):
        distribute.Distribution(replicas=2).check_batch(7)


def test_a_non_chief_worker_reads_the_chiefs_checkpoint_but_never_writes_or_removes_it(tmp_path):
    import numpy as np

    from edgetl.artifacts.resume import Checkpoint, CheckpointStore

    identity = {"options": {"epochs": 3}, "data_stamp": "x"}
    chief = CheckpointStore(tmp_path / "resume", identity)
    chief.save(Checkpoint(2, "head", [{"epoch": 1}, {"epoch": 2}], 0.5, 1, [np.ones(3)], [np.zeros(3)], []))
    reader = distribute.ReadOnlyCheckpointStore(tmp_path / "resume", identity)
    loaded = reader.load()
    assert loaded.epoch == 2 and loaded.weights[0].tolist() == [1, 1, 1] and reader.key == chief.key
    reader.save(Checkpoint(3, "head", [], 0.0, 0, [np.zeros(3)], [], []))
    reader.clear()
    assert chief.load().epoch == 2
    stale = distribute.ReadOnlyCheckpointStore(tmp_path / "resume", identity | {"data_stamp": "y"})
    assert stale.load() is None  # a different training: not resumed, and left for the chief to judge
    assert (tmp_path / "resume" / "state.json").exists()


# --- Real training ---

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Images, a 'pretrained' weights file (random weights, BatchNorm statistics of these images) and the
    single-process reference run."""
    from edgetl.backbones import get_backbone
    from edgetl.data import dataset_index as dsi
    from edgetl.data.pipeline import make_dataset
    from edgetl.network.model import build_classifier
    from edgetl.tf_env import keras
    from edgetl.training import batchnorm

    root = tmp_path_factory.mktemp("distribute")
    data = write_image_folder(root / "data", classes=3, per_class=12)
    keras().utils.set_random_seed(0)
    spec = get_backbone("mobilenet_v2")
    model = build_classifier(spec, 32, 0.35, 3, imagenet=False, dropout=0.0)
    index = dsi.index_data(data)
    batchnorm.recalibrate(model, make_dataset(index.paths, index.labels, image_size=32, batch_size=16,
                                              preprocessing=spec.preprocessing, training=False))
    model.save_weights(str(root / "stats.h5"))
    options = HEAD_ONLY | {"weights": str(root / "stats.h5")}
    single = edgetl.train(str(data), str(root / "single"), **options)
    return root, data, options, single


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(commands: list[list[str]], logs: Path, scratch: Path) -> list[subprocess.Popen]:
    """One process per command, each with its TF_CONFIG (worker i of a cluster on free local ports)."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(len(commands))]}
    logs.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, command in enumerate(commands):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(scratch),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(command, stdout=open(logs / f"worker{i}.out", "w"),
                                      stderr=open(logs / f"worker{i}.err", "w"), env=env))
    return procs


def _wait(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _assert_same_training(history_a, history_b):
    assert [(h["epoch"], h["phase"]) for h in history_a] == [(h["epoch"], h["phase"]) for h in history_b]
    for a, b in zip(history_a, history_b):
        for key in ("loss", "val_loss"):
            assert abs(a[key] - b[key]) <= LOSS_TOLERANCE, (key, history_a, history_b)
        assert a["val_accuracy"] == b["val_accuracy"], (history_a, history_b)


def test_two_workers_train_what_one_process_trains_and_only_the_chief_writes(setup, tmp_path):
    root, data, options, single = setup
    out = tmp_path / "run"
    # Worker 1 reads its own copy of the images, at another path and with new modification times (as on
    # another machine): the same content, so the same training.
    copy = Path(shutil.copytree(data, tmp_path / "elsewhere" / "data", copy_function=shutil.copyfile))
    assert os.stat(next(copy.rglob("*.png"))).st_mtime_ns != os.stat(next(data.rglob("*.png"))).st_mtime_ns
    argv = [sys.executable, "-c", API_WORKER, "DATA", str(out), json.dumps(options | {"distribute": "multi-worker"})]
    procs = _start_workers([[str(folder) if a == "DATA" else a for a in argv] for folder in (data, copy)],
                           tmp_path / "logs", tmp_path / "tmp")
    codes = _wait(procs, WORKER_TIMEOUT)
    errors = [(tmp_path / "logs" / f"worker{i}.err").read_text()[-3000:] for i in range(2)]
    assert codes == [0, 0], errors
    results = [json.loads((tmp_path / "logs" / f"worker{i}.out").read_text().splitlines()[-1]) for i in range(2)]

    manifest = read_manifest(out)  # the chief's artifact verifies (every sha256)
    assert manifest.sections["distribute"] | {"devices": None} == {
        "strategy": "multi-worker", "replicas": 2, "workers": 2, "devices": None, "global_batch": 8,
        "per_replica_batch": 4, "learning_rate_scaling": distribute.LR_SCALING, "auto_shard_policy": "DATA",
        "task": {"type": "worker", "index": 0, "chief": True}}
    assert results[1]["distribute"]["task"] == {"type": "worker", "index": 1, "chief": False}
    # Same global batches, same steps: the single process's training, to float rounding.
    _assert_same_training(manifest.sections["history"], single.sections["history"])
    assert manifest.metrics["val_accuracy"] == single.metrics["val_accuracy"]
    assert results[1]["metrics"]["val_accuracy"] == manifest.metrics["val_accuracy"]  # replicas stayed in sync
    # Only the chief wrote: no resume checkpoint or lock left, the worker's temporary copy removed.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "logs", "run", "tmp"]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_mirrored_on_two_logical_cpu_devices_trains_what_one_process_trains(setup, tmp_path):
    """Logical devices must exist before TensorFlow initializes: a fresh process."""
    root, data, options, single = setup
    done = subprocess.run([sys.executable, "-c", API_WORKER, str(data), str(tmp_path / "run"),
                           json.dumps(options | {"distribute": "mirrored"})], capture_output=True, text=True,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=WORKER_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    section = read_manifest(tmp_path / "run").sections["distribute"]
    assert section["replicas"] == 2 and section["per_replica_batch"] == 4 and section["workers"] == 1
    assert [d.rsplit("/", 1)[-1] for d in section["devices"]] == ["device:CPU:0", "device:CPU:1"]
    _assert_same_training(json.loads(done.stdout.splitlines()[-1])["history"], single.sections["history"])


def test_killing_a_worker_mid_run_stops_the_chief_with_exit_2_and_leaves_no_run(setup, tmp_path):
    """TensorFlow cannot continue without a peer: the chief's next collective fails (the connection is
    reset), it exits 2 with a message saying to restart every worker, and nothing looks like a run."""
    root, data, _, _ = setup
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "edgetl", "train", str(data), "-o", str(out), "--backbone", "mobilenet_v2",
            "--alpha", "0.35", "--image-size", "32", "--weights", "none", "--epochs", "40", "--batch-size", "8",
            "--no-augment", "--distribute", "multi-worker"]
    logs = tmp_path / "logs"
    procs = _start_workers([argv, argv], logs, tmp_path / "tmp")
    try:
        deadline = time.monotonic() + WORKER_TIMEOUT
        while "scratch epoch 1/40" not in (logs / "worker0.err").read_text():
            assert time.monotonic() < deadline and procs[0].poll() is None, (logs / "worker0.err").read_text()[-3000:]
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        started = time.monotonic()
        code = procs[0].wait(timeout=120)
        stopped_after = time.monotonic() - started
    finally:
        _wait(procs, 5)
    stderr = (logs / "worker0.err").read_text()
    assert code == 2, stderr[-3000:]
    assert "error: --distribute multi-worker: lost contact with another worker" in stderr
    assert "Re-run the same command on every worker" in stderr
    assert stopped_after < 60
    assert not out.exists()
    with pytest.raises(EdgetlError):
        read_manifest(out)


def test_workers_started_with_different_options_stop_with_exit_2_before_training(setup, tmp_path):
    """Every worker must run the same training: each field compared (by all-gather) before the first step."""
    root, data, _, _ = setup
    argv = [sys.executable, "-m", "edgetl", "train", str(data), "-o", str(tmp_path / "run"), "--alpha", "0.35",
            "--image-size", "32", "--weights", "none", "--batch-size", "8", "--no-augment",
            "--distribute", "multi-worker"]
    procs = _start_workers([argv + ["--epochs", "1"], argv + ["--epochs", "2"]], tmp_path / "logs", tmp_path / "tmp")
    assert _wait(procs, WORKER_TIMEOUT) == [2, 2]
    for i in range(2):
        stderr = (tmp_path / "logs" / f"worker{i}.err").read_text()
        # Each worker names the one field that differs, with both values; nothing else is listed.
        assert ("error: --distribute multi-worker: the workers disagree about --epochs (worker 0: 1; worker 1: 2). "
                "Run the same command on every worker") in stderr, stderr[-2000:]
        assert "scratch epoch 1/" not in stderr
    assert not (tmp_path / "run").exists()


def test_mirrored_after_tensorflow_started_trains_on_the_devices_there_are_and_says_so(setup):
    """In a process where TensorFlow already made its devices (this one), the CPU cannot be split any more."""
    from edgetl.tf_env import tf

    if tf().config.list_physical_devices("GPU") or len(tf().config.list_logical_devices("CPU")) > 1:
        pytest.skip("this process has several devices")
    dist = distribute.setup("mirrored", global_batch=8)
    assert dist.replicas == 1 and "TensorFlow was initialized before edgetl could split the CPU" in dist.note
    assert dist.section(8)["note"] == dist.note and dist.section(8)["per_replica_batch"] == 8


def test_mixed_precision_needs_a_gpu_and_the_run_is_saved_in_float32(tmp_path):
    from edgetl.backbones import get_backbone
    from edgetl.network.model import build_classifier
    from edgetl.tf_env import tf

    if tf().config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: --mixed-precision is allowed here")
    with pytest.raises(UsageError, match="--mixed-precision: TensorFlow sees no GPU"):
        distribute.setup("none", mixed_precision=True)
    # The float32 copy written at the end of a mixed-precision run (the policy works on a CPU, slowly).
    import numpy as np

    with distribute.mixed_precision_policy(True):
        mixed = build_classifier(get_backbone("mobilenet_v2"), 32, 0.35, 3, imagenet=False, dropout=0.0)
    assert mixed.layers[-1].compute_dtype == "float16"
    copy = distribute.float32_copy(mixed)
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(mixed.get_weights(), copy.get_weights()))
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    assert np.allclose(copy(images).numpy(), mixed(images).numpy().astype("float32"), atol=1e-2)
