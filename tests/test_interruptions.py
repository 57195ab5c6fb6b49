"""Interruptions, locks and resource limits, with real signals on real `edgetl` subprocesses.

Training runs are tiny (MobileNetV2 alpha 0.35, 32 px, 20 images) and use the full batch (16 training
images, --batch-size 16), so a resumed run sees the same batches as an uninterrupted one; only the
order of images inside the batch differs (the shuffle restarts), which moves losses by float rounding.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgetl.artifacts.locking import lock_path, locked
from edgetl.artifacts.resume import Checkpoint, CheckpointStore, data_stamp, resume_dir
from edgetl.errors import ResourceError
from tests.conftest import TINY, run_cli, write_image_folder

CLI_ARGS = ["--backbone", "mobilenet_v2", "--alpha", "0.35", "--image-size", "32", "--weights", "none",
            "--fine-tune-layers", "all", "--batch-size", "16", "--no-augment", "--seed", "0",
            "--fine-tune-learning-rate", "1e-3"]
# The same through the Python API, with dropout off: its masks are redrawn after a resume.
API_OPTIONS = TINY | {"epochs": 1, "fine_tune_epochs": 3, "fine_tune_layers": "all", "batch_size": 16,
                      "fine_tune_learning_rate": 1e-3, "dropout": 0.0}
API_DRIVER = "import json, sys, edgetl; edgetl.train(sys.argv[1], sys.argv[2], **json.loads(sys.argv[3]))"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("interrupt") / "data", classes=2, per_class=10, size=32)


def _start(command: list[str], log: Path) -> subprocess.Popen:
    # SIGINT back to its default in the child: a test run started in the background of a non-interactive
    # shell (`cmd &`, as some CI runners do) has it ignored, the child inherits that and Ctrl-C never arrives.
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, *command], stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait(proc: subprocess.Popen, log: Path, ready, what: str) -> None:
    deadline = time.monotonic() + 300
    while not ready():
        assert proc.poll() is None, f"exited {proc.returncode} before {what}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _checkpoint_epoch(output: Path) -> int:
    try:
        return json.loads((resume_dir(output) / "state.json").read_text())["epoch"]
    except (OSError, ValueError):
        return 0


def _history(run: Path) -> list[dict]:
    return json.loads((run / "manifest.json").read_text())["history"]


def test_sigint_exits_130_says_how_to_resume_and_the_rerun_resumes_in_the_right_phase(data, tmp_path):
    out = tmp_path / "out" / "run"
    train = ["-m", "edgetl", "train", str(data), "-o", str(out), "--epochs", "2", "--fine-tune-epochs", "1",
             *CLI_ARGS]
    log = tmp_path / "first.log"
    first = _start(train, log)
    try:
        _wait(first, log, lambda: lock_path(out).exists() and lock_path(out).read_text() == str(first.pid),
              "the lock")
        second = run_cli(*train[2:])  # the same command while the first one runs
        assert second.returncode == 2, second.stderr
        assert f"in use by another edgetl process (PID {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr

        _wait(first, log, lambda: _checkpoint_epoch(out) >= 1, "the first checkpoint")
        first.send_signal(signal.SIGINT)  # during the head phase or just after it
        assert first.wait(timeout=120) == 130, log.read_text()
    finally:
        first.kill()
    message = log.read_text().strip().splitlines()[-1]
    match = re.fullmatch(r"interrupted; re-run the same command to resume from epoch (\d) of 3 \(checkpoint .*\)",
                         message)
    assert match, log.read_text()
    done = int(match.group(1))
    assert not out.exists() and not lock_path(out).exists()
    saved = json.loads((resume_dir(out) / "state.json").read_text())
    assert saved["epoch"] == done and len(saved["history"]) == done

    rerun = run_cli(*train[2:])
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from epoch {done} of 3" in rerun.stderr
    history = _history(out)
    assert [(h["epoch"], h["phase"]) for h in history] == [(1, "scratch"), (2, "scratch"), (3, "fine-tune")]
    assert history[:done] == saved["history"], "the epochs done before the interruption are kept as they were"
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"], "checkpoint, lock or staging left behind"


def test_sigkill_leaves_no_run_and_the_resumed_run_matches_an_uninterrupted_one(data, tmp_path):
    options = json.dumps(API_OPTIONS)
    reference_log = tmp_path / "reference.log"  # the uninterrupted run trains beside the one killed (CI time)
    reference = _start(["-c", API_DRIVER, str(data), str(tmp_path / "reference"), options], reference_log)
    out = tmp_path / "out" / "run"
    log = tmp_path / "killed.log"
    killed = _start(["-c", API_DRIVER, str(data), str(out), options], log)
    try:
        _wait(killed, log, lambda: _checkpoint_epoch(out) >= 2, "the checkpoint of epoch 2")
        killed.kill()  # SIGKILL: no clean-up of any kind, in the middle of the fine-tune phase
        assert killed.wait(timeout=60) == -signal.SIGKILL
        assert reference.wait(timeout=600) == 0, reference_log.read_text()
    finally:
        killed.kill()
        reference.kill()
    assert not out.exists()
    assert all(p.name.startswith(".") for p in out.parent.iterdir()), "only hidden folders may remain"

    resumed = subprocess.run([sys.executable, "-c", API_DRIVER, str(data), str(out), options],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    done = int(re.search(r"resuming from epoch (\d) of 4", resumed.stderr).group(1))
    assert done >= 2
    ours, theirs = _history(out), _history(tmp_path / "reference")
    assert [(h["epoch"], h["phase"]) for h in ours] == [(h["epoch"], h["phase"]) for h in theirs]
    for a, b in zip(ours, theirs):
        # Losses after the resume differ by rounding only; a lost optimizer state (Adam moments, the
        # cosine schedule's step) moves the next epoch's loss by ~0.2 and validation accuracy by 0.5.
        assert a["loss"] == pytest.approx(b["loss"], abs=0.02), (ours, theirs)
        assert a["val_accuracy"] == b["val_accuracy"], (ours, theirs)
    ours_doc = json.loads((out / "manifest.json").read_text())["metrics"]
    theirs_doc = json.loads((tmp_path / "reference" / "manifest.json").read_text())["metrics"]
    assert ours_doc["val_accuracy"] == theirs_doc["val_accuracy"]
    assert ours_doc["best_epoch"] == theirs_doc["best_epoch"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]


def test_export_and_compress_refuse_a_run_another_process_is_writing(tmp_path):
    run = tmp_path / "run"
    with locked(run):
        for command in (["export", str(run), "--format", "tflite"], ["compress", str(run)]):
            result = run_cli(*command)
            assert result.returncode == 2, result.stderr
            assert result.stderr.strip() == (f"error: {run}: in use by another edgetl process (PID {os.getpid()}); "
                                             f"wait for it to finish or stop it (lock file {lock_path(run)})")
    assert not lock_path(run).exists()


def test_a_lock_whose_holder_was_killed_is_free(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from edgetl.artifacts.locking import locked\nwith locked(Path(sys.argv[1])):\n"
                               "    print('held', flush=True); time.sleep(600)", str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.kill()
        holder.wait(timeout=60)
    finally:
        holder.kill()
    assert lock_path(run).exists(), "SIGKILL leaves the file, but not the lock"
    with locked(run):
        assert lock_path(run).read_text() == str(os.getpid())


def _cli_main(args: list[str], capsys) -> tuple[int, str]:
    from edgetl.cli import main

    old_argv = sys.argv
    sys.argv = ["edgetl", *args]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        sys.argv = old_argv
    return exit_info.value.code, capsys.readouterr().err


def test_disk_full_while_writing_the_run_is_one_clean_error_and_no_partial_run(data, tmp_path, monkeypatch, capsys):
    """ENOSPC is injected in-process (Path.write_text of labels.txt): a real tiny filesystem needs root."""
    real_write_text = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name == "labels.txt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    out = tmp_path / "out" / "run"
    code, err = _cli_main(["train", str(data), "-o", str(out), "--epochs", "1", *CLI_ARGS], capsys)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: {out}: no space left on device (writing ") and "labels.txt" in last, err
    assert "Traceback" not in err
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir()] == [".run.resume"], "no staging folder, no lock"

    monkeypatch.undo()  # space is back: the re-run resumes after the last epoch and only writes the run
    code, err = _cli_main(["train", str(data), "-o", str(out), "--epochs", "1", *CLI_ARGS], capsys)
    assert code == 0, err
    assert "resuming from epoch 1 of 1" in err and "head epoch" not in err
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]


def test_out_of_memory_names_batch_size_and_suggests_a_smaller_one(data, tmp_path, monkeypatch, capsys):
    """A real out-of-memory error is impractical on CPU: fit_phase raises TensorFlow's own error instead."""
    import edgetl.training.trainer
    from edgetl.tf_env import tf

    def out_of_memory(*args, **kwargs):
        raise tf().errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[64,96,16,16]")

    monkeypatch.setattr(edgetl.training.trainer, "fit_phase", out_of_memory)
    code, err = _cli_main(["train", str(data), "-o", str(tmp_path / "run"), "--epochs", "1", *CLI_ARGS], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "error: --batch-size 16: out of memory while training (OOM when allocating tensor with "
        "shape[64,96,16,16]); try a smaller batch, e.g. --batch-size 8")
    with pytest.raises(ResourceError):
        edgetl.train(str(data), str(tmp_path / "run2"), **TINY)


def _checkpoint(epoch: int) -> Checkpoint:
    weights = [np.full((2, 3), float(epoch), np.float32), np.arange(4, dtype=np.float32)]
    return Checkpoint(epoch=epoch, phase="head", history=[{"epoch": i + 1} for i in range(epoch)],
                      best_accuracy=0.5, best_epoch=1, weights=weights,
                      best_weights=[w - 1 for w in weights], optimizer=[np.array(epoch, np.int64)])


def test_checkpoint_round_trip_keeps_one_complete_epoch_file(tmp_path):
    identity = {"options": {"epochs": 3}, "source": {"source": "none"}, "train_fingerprint": "a",
                "val_fingerprint": "b", "data_stamp": "c"}
    store = CheckpointStore(tmp_path / ".run.resume", identity)
    store.save(_checkpoint(1))
    store.save(_checkpoint(2))
    assert sorted(p.name for p in store.directory.iterdir()) == ["epoch-2.npz", "state.json"]
    loaded = CheckpointStore(store.directory, identity).load()
    expected = _checkpoint(2)
    assert (loaded.epoch, loaded.phase, loaded.history, loaded.best_epoch) == (2, "head", expected.history, 1)
    for got, want in zip(loaded.weights + loaded.best_weights + loaded.optimizer,
                         expected.weights + expected.best_weights + expected.optimizer):
        np.testing.assert_array_equal(got, want)


def test_epochs_shorter_than_ten_checkpoint_writes_are_checkpointed_every_few_epochs(tmp_path):
    """A checkpoint may cost at most 10 % of the training time; a phase's last epoch is always saved."""
    from edgetl.tf_env import keras
    from edgetl.training.phases import Progress

    k = keras()
    model = k.Sequential([k.Input((4,)), k.layers.Dense(3)])
    optimizer = k.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    identity = {"options": {"epochs": 9}, "source": {"source": "none"}, "train_fingerprint": "a",
                "val_fingerprint": "b", "data_stamp": "c"}

    def saved_epoch(store: CheckpointStore) -> int:
        return json.loads((store.directory / "state.json").read_text())["epoch"]

    store = CheckpointStore(tmp_path / "throttled", identity)
    progress = Progress(store, total=9)
    progress.best.update(model, 0.5, 1)  # what validation does before each save
    progress.save(model, optimizer, 1, "head", last_of_phase=False)  # the first is always written
    assert (saved_epoch(store), progress.done) == (1, 1)
    progress.save(model, optimizer, 2, "head", last_of_phase=False)  # microseconds later: skipped
    assert (saved_epoch(store), progress.done) == (1, 1)
    time.sleep(20 * progress.save_seconds + 0.01)  # ten times the write has passed
    progress.save(model, optimizer, 3, "head", last_of_phase=False)
    assert (saved_epoch(store), progress.done) == (3, 3)
    progress.save(model, optimizer, 4, "head", last_of_phase=True)  # end of the phase: written whatever the time
    assert (saved_epoch(store), progress.done) == (4, 4)
    assert "interrupted; re-run the same command to resume from epoch 4 of 9" in progress.interrupted_message()

    every = Progress(CheckpointStore(tmp_path / "every", identity), total=9, throttle=False)  # multi-worker runs
    every.best.update(model, 0.5, 1)
    for epoch in (1, 2):
        every.save(model, optimizer, epoch, "head", last_of_phase=False)
        assert saved_epoch(every.store) == epoch


def test_a_changed_command_or_changed_images_never_resume_and_say_why(data, tmp_path, capsys):
    paths = [str(p) for p in sorted(data.rglob("*.png"))]
    identity = {"options": {"epochs": 3, "seed": 0}, "source": {"source": "none"}, "train_fingerprint": "a",
                "val_fingerprint": "b", "data_stamp": data_stamp(paths)}
    directory = tmp_path / ".run.resume"
    CheckpointStore(directory, identity).save(_checkpoint(1))
    assert CheckpointStore(directory, identity | {"options": {"epochs": 4, "seed": 0}}).load() is None
    assert "a different training (options changed: --epochs); starting over" in capsys.readouterr().err
    assert not directory.exists()

    CheckpointStore(directory, identity).save(_checkpoint(1))
    stat = os.stat(paths[0])
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # an image was replaced
    try:
        assert CheckpointStore(directory, identity | {"data_stamp": data_stamp(paths)}).load() is None
        assert "(the images changed); starting over" in capsys.readouterr().err
    finally:
        os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))


KILL_PROFILE = """schema_version = 1
name = "tflite-two-modes"
description = "test profile: LiteRT, float and int8 TFLite"
runtime = "litert"
formats = ["tflite"]
quantization = ["none", "int8"]
threads = 1
"""


def test_sigkill_during_compress_leaves_only_complete_artifacts_and_the_rerun_finishes(run, tmp_path):
    import shutil

    from edgetl.artifacts.manifest import read_manifest

    work = tmp_path / "run"
    shutil.copytree(run, work, ignore=shutil.ignore_patterns("artifacts", "bench", "compress"))
    profile = tmp_path / "tflite-two-modes.toml"
    profile.write_text(KILL_PROFILE)
    args = ["-m", "edgetl", "compress", str(work), "--target", str(profile), "--max-accuracy-drop", "100",
            "--no-repair", "--verify-size", "18", "--threads", "1"]
    log = tmp_path / "first.log"
    proc = _start(args, log)
    first = work / "artifacts" / "tflite-none" / "manifest.json"
    _wait(proc, log, first.is_file, "the first artifact")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    for folder in (work / "artifacts").iterdir():
        if not folder.name.startswith("."):
            read_manifest(folder)  # every visible artifact is complete and intact
    rerun = run_cli(*args[2:], "--json")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    status = {c["name"]: c["status"] for c in json.loads(rerun.stdout)["compress"]["candidates"]}
    assert status == {"tflite-none": "reused", "tflite-int8": "built"}
    assert not [p.name for p in (work / "artifacts").iterdir() if p.name.startswith(".")]


# --- SIGTERM: what docker stop, systemd, Kubernetes and batch schedulers send; it ends like Ctrl-C, exit 143 ---

def _terminate(proc: subprocess.Popen, log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=120) == 143, log.read_text()
    finally:
        proc.kill()
    text = log.read_text()
    assert "Traceback" not in text, text
    return text.strip().splitlines()[-1]


def test_sigterm_during_training_keeps_the_checkpoint_releases_the_lock_and_exits_143(data, tmp_path):
    out = tmp_path / "run"
    log = tmp_path / "train.log"
    proc = _start(["-m", "edgetl", "train", str(data), "-o", str(out), "--epochs", "2", "--fine-tune-epochs", "2",
                   *CLI_ARGS], log)
    _wait(proc, log, lambda: _checkpoint_epoch(out) >= 1, "the first checkpoint")
    last = _terminate(proc, log)
    assert re.fullmatch(r"interrupted; re-run the same command to resume from epoch \d of 4 \(checkpoint .*\)", last)
    assert not out.exists() and not lock_path(out).exists()
    assert json.loads((resume_dir(out) / "state.json").read_text())["epoch"] >= 1


def test_sigterm_during_compress_and_bench_exits_143_saying_what_to_do(run, tmp_path):
    import shutil

    from edgetl.artifacts.manifest import read_manifest

    work = tmp_path / "run"
    shutil.copytree(run, work, ignore=shutil.ignore_patterns("artifacts", "bench", "compress", "edgetl.log"))
    profile = tmp_path / "tflite-two-modes.toml"
    profile.write_text(KILL_PROFILE)
    log = tmp_path / "compress.log"
    proc = _start(["-m", "edgetl", "compress", str(work), "--target", str(profile), "--max-accuracy-drop", "100",
                   "--no-repair", "--verify-size", "18", "--threads", "1"], log)
    _wait(proc, log, (work / "artifacts" / "tflite-none" / "manifest.json").is_file, "the first artifact")
    last = _terminate(proc, log)
    assert last == (f"interrupted; re-run the same command to resume: the artifacts already in {work}/artifacts "
                    "are checked and reused")
    assert not lock_path(work).exists()
    assert not [p.name for p in (work / "artifacts").iterdir() if p.name.startswith(".")], "staging left behind"
    read_manifest(work / "artifacts" / "tflite-none")

    log = tmp_path / "bench.log"
    proc = _start(["-m", "edgetl", "bench", str(work), "--threads", "1", "--min-time", "30", "-o",
                   str(tmp_path / "report")], log)
    _wait(proc, log, lambda: "latency at 1 thread(s)" in log.read_text(), "the timing")
    assert _terminate(proc, log) == "interrupted; no report was written; re-run the same command"
    assert not (tmp_path / "report").exists()


def _interrupted_replacement(run: Path, where: Path, with_new: bool) -> Path:
    """What `--overwrite` killed between its two renames leaves: RUN missing, the old version aside at
    .RUN.old-PID and, if the new one was complete, the new version at .RUN.partial-PID (marked here by a
    file outside the manifest, which integrity checks ignore)."""
    import shutil

    target = where / "run"
    keep = shutil.ignore_patterns("artifacts", "bench", "compress", "edgetl.log")
    shutil.copytree(run, where / ".run.old-4242", ignore=keep)
    if with_new:
        shutil.copytree(run, where / ".run.partial-4242", ignore=keep)
        (where / ".run.partial-4242" / "marker-new").write_text("the new version")
    return target


def test_the_next_command_finishes_a_replacement_interrupted_mid_swap(run, tmp_path):
    target = _interrupted_replacement(run, tmp_path, with_new=True)
    done = run_cli("export", str(target), "--format", "tflite", "--verify-size", "8", "-o", str(tmp_path / "a"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (f"{target}: finished a replacement that was interrupted (the new version was complete: now in place)"
            in done.stderr)
    assert (target / "marker-new").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "run"], "the old copy is removed"


def test_an_interrupted_replacement_without_a_complete_new_version_restores_the_old(run, tmp_path, capsys):
    from edgetl.artifacts.run_dir import Run

    target = _interrupted_replacement(run, tmp_path, with_new=False)
    (tmp_path / ".run.partial-4242").mkdir()  # the new version, half-written: no manifest yet
    assert Run.open(target).labels == Run.open(run).labels
    assert "restored the previous version after an interrupted replacement" in capsys.readouterr().err
    assert not (target / "marker-new").exists()
    assert not list(tmp_path.glob(".run.old-*"))
