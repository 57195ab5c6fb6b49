"""What reaches the user's terminal: edgetl's own lines, not TensorFlow's C++ chatter.

TensorFlow, absl and the converters log from C++ straight to file descriptor 2 (absl's "All log
messages before absl::InitializeLog()", cuInit, oneDNN notices, "fully_quantize: 0, inference_type: 6
…"), which no Python setting reaches; Python's logging and warnings write to sys.stderr, fd 2 as well.
`captured_native_output` points fd 2 at a log file for the length of a CLI command and gives edgetl's
own lines (`edgetl.progress.say`) a duplicate of the real terminal. The CLI keeps the log in the
command's directory (`edgetl.log`, appended per command) and shows its tail when a command fails
unexpectedly; `--verbose` turns the capture off. The Python API never captures: a library leaves
the process's file descriptors alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, TextIO

LOG_NAME = "edgetl.log"


class NativeLog:
    """The captured output of one command: a temporary file until `keep` copies it where it belongs."""

    def __init__(self, path: Path, terminal: TextIO) -> None:
        self.path = path
        self.terminal = terminal
        self.destination: Path | None = None

    def keep_in(self, directory: str | Path) -> None:
        """Append this command's log to DIRECTORY/edgetl.log when the command ends (if DIRECTORY exists then)."""
        self.destination = Path(directory)

    def keep(self, command: list[str], keep_orphan: bool) -> Path | None:
        """Append the log to its destination; where it is afterwards (None: nothing captured, or nothing
        worth keeping). Without a destination the log stays in its temporary file if `keep_orphan`."""
        if not self.path.is_file():
            return None
        useful = self.path.stat().st_size > 0
        if useful and self.destination is not None and self.destination.is_dir():
            target = self.destination / LOG_NAME
            header = f"==> edgetl {' '.join(command)}  ({time.strftime('%Y-%m-%d %H:%M:%S')})\n"
            with open(target, "a", encoding="utf-8") as out:
                out.write(header + self.path.read_text(encoding="utf-8", errors="replace"))
            self.path.unlink()
            return target
        if useful and keep_orphan:
            return self.path
        self.path.unlink()
        return None


_log: NativeLog | None = None  # the capture in progress, if any


def terminal() -> TextIO:
    """Where edgetl's own progress lines go: the real stderr, also while fd 2 is captured."""
    return _log.terminal if _log is not None else sys.stderr


def current_log() -> NativeLog | None:
    return _log


@contextlib.contextmanager
def captured_native_output() -> Iterator[NativeLog]:
    """Point fd 2 and sys.stderr at a temporary log file until the block ends."""
    global _log
    sys.stderr.flush()
    previous = sys.stderr
    handle, name = tempfile.mkstemp(prefix="edgetl-", suffix=".log")
    saved = os.dup(2)
    # edgetl's own lines go where sys.stderr went: the terminal (a duplicate of fd 2, which is about to be
    # redirected), or the stream a host put in its place (pytest, an IDE), which is not fd 2.
    shown = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace") \
        if _writes_to_fd_2(previous) else previous
    os.dup2(handle, 2)
    os.close(handle)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    _log = NativeLog(Path(name), shown)
    try:
        yield _log
    finally:
        sys.stderr.flush()
        sys.stderr = previous
        os.dup2(saved, 2)
        os.close(saved)
        if shown is not previous:
            shown.close()
        _log = None


def _writes_to_fd_2(stream: TextIO) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False
