"""A quiet terminal: TensorFlow's native log lines go to edgetl.log, edgetl's own lines to the terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from edgetl.console import LOG_NAME, captured_native_output, current_log
from edgetl.progress import say
from tests.conftest import run_cli

# absl/glog lines ("I0000 00:00:17… port.cc:153] …", "E0000 … cuda_platform.cc"), absl's pre-init notice,
# the TFLite converter's and LiteRT's own prints.
NATIVE = re.compile(r"^[IWEF]\d{4} |^WARNING: All log messages before absl|fully_quantize: |^INFO: Created TensorFlow",
                    re.MULTILINE)


def test_the_capture_sends_fd_2_to_the_log_and_edgetl_lines_to_the_terminal(tmp_path, capfd):
    with captured_native_output() as log:
        os.write(2, b"I0000 00:00:1.0 native.cc:1] from C++\n")
        print("a Python warning", file=sys.stderr)
        say("edgetl: a progress line")
        assert current_log() is log
    assert current_log() is None
    shown = capfd.readouterr().err
    assert shown == "edgetl: a progress line\n"
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"  # fd 2 is the terminal again
    log.keep_in(tmp_path)
    kept = log.keep(["train", "data"], keep_orphan=False)
    assert kept == tmp_path / LOG_NAME and not log.path.exists()
    text = kept.read_text()
    assert text.startswith("==> edgetl train data  (")
    assert text.splitlines()[1:] == ["I0000 00:00:1.0 native.cc:1] from C++", "a Python warning",
                                     "edgetl: a progress line"]


def test_a_log_without_a_destination_is_dropped_unless_the_command_failed(tmp_path):
    for keep_orphan in (False, True):
        with captured_native_output() as log:
            os.write(2, b"native\n")
        kept = log.keep(["bundle"], keep_orphan=keep_orphan)
        assert (kept == log.path and kept.read_text() == "native\n") if keep_orphan else kept is None
        log.path.unlink(missing_ok=True)


def test_an_unexpected_failure_shows_the_tail_of_the_native_log():
    script = textwrap.dedent("""
        import os, sys
        from edgetl.cli import cli, main

        @cli.command("explode")
        def explode():
            os.write(2, b"E0000 converter.cc:7] the native reason\\n")
            raise RuntimeError("boom")

        sys.argv = ["edgetl", "explode"]
        main()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "the last 1 lines TensorFlow and the converters logged" in result.stderr
    assert "  E0000 converter.cc:7] the native reason" in result.stderr
    assert result.stderr.rstrip().endswith("RuntimeError: boom")
    kept = re.search(r"logged \((.+?)\):", result.stderr).group(1)
    assert os.path.isfile(kept)  # no run folder to keep it in: the temporary file stays for the user
    os.unlink(kept)


@pytest.mark.slow
def test_export_shows_only_edgetls_lines_and_keeps_tensorflows_in_the_run(run, tmp_path):
    """A real int8 conversion: TensorFlow's start-up lines and the converter's prints reach RUN/edgetl.log,
    not the terminal; with --verbose they reach the terminal too."""
    log_path = run / LOG_NAME
    before = log_path.read_text() if log_path.exists() else ""
    quiet = run_cli("export", str(run), "--format", "tflite", "--quantize", "int8", "--calibration-size", "24",
                    "--verify-size", "24", "-o", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert not NATIVE.search(quiet.stderr), quiet.stderr
    assert "converting" in quiet.stderr and "wrote" in quiet.stderr  # edgetl's own progress lines are shown
    added = log_path.read_text()[len(before):]
    assert added.startswith(f"==> edgetl export {run} --format tflite")
    assert NATIVE.search(added) and "converting" in added
    loud = run_cli("export", str(run), "--format", "tflite", "--quantize", "int8", "--calibration-size", "24",
                   "--verify-size", "24", "-o", str(tmp_path / "loud"), "--verbose")
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert NATIVE.search(loud.stderr), loud.stderr
    assert log_path.read_text()[len(before) + len(added):] == ""  # --verbose: nothing captured, nothing kept
