"""How an `edgetl` command runs as a process: the exit code and one line per failure, SIGTERM handled as
Ctrl-C, and TensorFlow's native output kept out of the terminal (edgetl.console).

Exit codes (DESIGN.md), mapped here and only here: 0 success, 1 a check failed, 2 bad usage or input,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Anything unexpected keeps its traceback, preceded
by the last lines TensorFlow and the converters logged, which often say why.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from pathlib import Path
from typing import Any, Iterator

import click

from edgetl import console
from edgetl.errors import EdgetlError, Interrupted

VERBOSE_HELP = ("Also show TensorFlow's and the converters' own log lines here (by default they are kept in "
                "edgetl.log in the run or report folder, and shown when a command fails unexpectedly).")
LOG_TAIL_LINES = 30


@contextlib.contextmanager
def on_interrupt(message: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM inside the block ends with MESSAGE (what to do next), unless a deeper step said more."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            raise
        raise Interrupted(message) from None


def keep_log_in(directory: str | Path) -> None:
    """TensorFlow's captured log of this command goes to DIRECTORY/edgetl.log (edgetl.console)."""
    log = console.current_log()
    if log is not None:
        log.keep_in(directory)


def add_verbose_option(group: click.Group) -> None:
    """`--verbose` on the group and every command, so it is accepted before or after the command name;
    run_command_line reads it from the arguments (the capture starts before click parses them)."""
    for command in [group, *group.commands.values()]:
        command.params.append(click.Option(["--verbose"], is_flag=True, expose_value=False, help=VERBOSE_HELP))


class Terminated:
    """SIGTERM (docker stop, systemd, Kubernetes, batch schedulers) ends a command as Ctrl-C does: the
    handler raises KeyboardInterrupt where Python next runs, so checkpoints are kept, locks released and
    staging folders removed by the same code; only the exit code differs (128 + 15)."""

    received = False

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        cls.received = True
        raise KeyboardInterrupt


def run_command_line(group: click.Group) -> None:
    """Run the click GROUP on sys.argv and exit with the code its outcome maps to."""
    signal.signal(signal.SIGTERM, Terminated.handle)
    verbose = "--verbose" in sys.argv[1:] or os.environ.get("EDGETL_VERBOSE", "") not in ("", "0")
    log = None
    try:
        with contextlib.nullcontext() if verbose else console.captured_native_output() as log:
            group.main(standalone_mode=False)
    except BaseException as exc:
        code = exit_code(exc)
        kept = log.keep(sys.argv[1:], keep_orphan=code in (None, 1)) if log else None
        if code is None:  # unexpected: what TensorFlow logged before it may say why
            if kept:
                lines = kept.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
                click.echo(f"the last {len(lines)} lines TensorFlow and the converters logged ({kept}):", err=True)
                click.echo("\n".join(f"  {line}" for line in lines), err=True)
            raise
        if kept and code == 1:
            click.echo(f"(TensorFlow's and the converters' own log: {kept})", err=True)
        sys.exit(code)
    if log:
        log.keep(sys.argv[1:], keep_orphan=False)
    sys.exit(0)


def exit_code(exc: BaseException) -> int | None:
    """Show a known failure as one line and return its exit code; None for anything unexpected."""
    if isinstance(exc, click.exceptions.Abort):  # click turns Ctrl-C into Abort; Interrupted says how to resume
        cause = exc.__cause__ if isinstance(exc.__cause__, KeyboardInterrupt) else None
        click.echo(str(cause) if cause and str(cause) else "aborted", err=True)
        return 143 if Terminated.received else 130
    if isinstance(exc, click.ClickException):
        exc.show()
        return exc.exit_code
    if isinstance(exc, EdgetlError):
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):  # edgetl.errors.Interrupted says how to resume
        click.echo(str(exc) or "interrupted", err=True)
        return 143 if Terminated.received else 130
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # a full disk outside a staged directory (which reports its own target)
        click.echo(f"error: {exc.filename or 'writing'}: no space left on device; free some space and re-run",
                   err=True)
        return 2
    return None
