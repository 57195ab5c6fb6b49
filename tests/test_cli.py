"""The command line as users and scripts meet it: exit codes, one-line errors, JSON on stdout."""

from __future__ import annotations

import json
import subprocess
import sys


from tests.conftest import run_cli, write_image_folder

TINY_ARGS = ["--backbone", "mobilenet_v2", "--alpha", "0.35", "--image-size", "32", "--weights", "none",
             "--epochs", "1", "--batch-size", "8", "--no-augment"]


def test_help_lists_every_contract_command_without_importing_tensorflow():
    script = ("import sys\nfrom edgetl.cli import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
              "print('TF_LOADED' if any(m == 'tensorflow' or m.startswith('tensorflow.') or m == 'tf_keras' "
              "for m in sys.modules) else 'TF_NOT_LOADED')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("train", "compress", "export", "bench", "inspect", "targets", "demo"):
        assert f"  {command} " in result.stdout
    assert result.stdout.strip().endswith("TF_NOT_LOADED")


def test_version_and_train_help():
    assert run_cli("--version").stdout.strip() == "edgetl, version 0.1.0"
    help_text = run_cli("train", "--help").stdout
    for option in ("--backbone", "--alpha", "--weights", "--image-size", "--epochs", "--fine-tune-epochs",
                   "--fine-tune-layers", "--batch-size", "--val-split", "--val-dir", "--seed", "--json",
                   "--augment / --no-augment", "--on-bad-image"):
        assert option in help_text


def test_compress_bad_recipe_is_a_usage_error_before_any_work(tmp_path):
    result = run_cli("compress", str(tmp_path / "no-run"), "--recipe", "prune:sparsity=2+ptq:mode=fp8", "--json")
    _assert_clean_usage_error(result, "--recipe", "sparsity must be between 0 and 1", "mode must be one of")
    assert result.stdout == ""


def test_compress_missing_run_is_a_usage_error(tmp_path):
    _assert_clean_usage_error(run_cli("compress", str(tmp_path / "no-run")), "no-run", "not a run directory")


def _assert_clean_usage_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith(("error:", "Error:"))]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0]


def test_bad_inputs_exit_2_with_one_clear_line(tmp_path):
    _assert_clean_usage_error(run_cli("train", str(tmp_path / "nope"), "-o", str(tmp_path / "run"), *TINY_ARGS),
                              str(tmp_path / "nope"), "no such file")
    one_class = write_image_folder(tmp_path / "one", classes=1, per_class=3)
    _assert_clean_usage_error(run_cli("train", str(one_class), "-o", str(tmp_path / "run"), *TINY_ARGS),
                              "only one class")
    data = write_image_folder(tmp_path / "data", classes=2, per_class=3)
    _assert_clean_usage_error(run_cli("train", str(data), "-o", str(tmp_path / "run"), *TINY_ARGS,
                                      "--val-split", "1.5"), "--val-split")
    _assert_clean_usage_error(run_cli("train", str(data), "-o", str(tmp_path / "run"), "--backbone", "nope"),
                              "--backbone")
    _assert_clean_usage_error(run_cli("train", str(data)), "-o")  # click's own usage error
    assert not (tmp_path / "run").exists()


def test_train_json_prints_one_document_and_writes_the_run(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=2, per_class=6)
    (data / "class_0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = run_cli("train", str(data), "-o", str(tmp_path / "run"), *TINY_ARGS, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads(result.stdout)  # nothing but the document on stdout
    assert doc["kind"] == "run" and doc["path"] == str(tmp_path / "run")
    assert 0.0 <= doc["metrics"]["val_accuracy"] <= 1.0
    assert [s["path"].endswith("broken.png") for s in doc["dataset"]["skipped"]] == [True]
    assert "epoch 1/1" in result.stderr  # progress went to stderr
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["files"] == doc["files"]


def test_bad_image_with_fail_policy_exits_2_and_writes_nothing(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=2, per_class=3)
    (data / "class_1" / "text.jpg").write_text("hello")
    result = run_cli("train", str(data), "-o", str(tmp_path / "run"), *TINY_ARGS, "--on-bad-image", "fail")
    _assert_clean_usage_error(result, "text.jpg", "--on-bad-image skip")
    assert not (tmp_path / "run").exists()


def test_targets_lists_every_profile_and_shows_one_as_json():
    listing = run_cli("targets")
    assert listing.returncode == 0
    for name in ("x86-cpu", "arm64-cpu", "android", "edgetpu", "mcu", "cuda"):
        assert name in listing.stdout
    mcu = json.loads(run_cli("targets", "mcu", "--json").stdout)
    assert mcu["int8_required"] is True and mcu["max_ram_bytes"] > 0
    _assert_clean_usage_error(run_cli("targets", "nope"), "unknown target profile 'nope'")
