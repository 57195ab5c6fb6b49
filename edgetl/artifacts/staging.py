"""Build a directory under a hidden temporary name, and put it in place only when complete.

Readers never see a half-written run or artifact: until the final rename, the target either does
not exist or is the previous complete version. A failure removes the staging folder; a full disk
becomes one clear ResourceError naming the target. The target's lock (edgetl/artifacts/locking.py) is held
throughout, so two processes never build the same directory, and staging folders that a killed
process left behind (SIGKILL skips clean-up) are removed by the next writer. A replacement killed in the
middle of its swap is finished (or undone) by the next command on the target, so it is never left missing.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
from pathlib import Path
from typing import Iterator

from edgetl.artifacts.locking import locked
from edgetl.artifacts.manifest import MANIFEST_NAME, fsync_dir
from edgetl.errors import ResourceError
from edgetl.progress import say

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target):
        _say_done(finish_interrupted_replacement(target))  # before the stale staging folders go: one may be it
        for stale in target.parent.glob(f".{glob.escape(target.name)}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = target.parent / f".{target.name}.partial-{os.getpid()}"
        staging.mkdir()
        try:
            yield staging
            fsync_dir(staging)
            # The swap: the old version aside, the new one in, then the old one removed. Killed between the
            # two renames, both complete copies remain and the next command finishes the swap.
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            if target.exists():
                target.rename(old)
            staging.rename(target)
            fsync_dir(target.parent)
            shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if exc.errno in DISK_FULL:
                raise disk_full(target, exc) from None
            raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def finish_interrupted_replacement(target: Path) -> str | None:
    """Repair what a replacement (--overwrite) killed between its two renames leaves: TARGET missing, the old
    version at `.T.old-PID` and the new one at `.T.partial-PID`, both complete (staging ends before the swap
    begins). The new one is put in place; without it, the old one is restored. An old copy beside an existing
    TARGET (killed after the swap) is removed. Call with TARGET's lock held; returns what was done, or None."""
    olds = sorted(target.parent.glob(f".{glob.escape(target.name)}.old-*"), key=lambda p: p.stat().st_mtime)
    if not olds:
        return None
    if target.exists():
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)
        return None
    old = olds[-1]
    new = target.parent / f".{target.name}.partial-{old.name.rsplit('-', 1)[1]}"
    if (new / MANIFEST_NAME).is_file():
        new.rename(target)
        done = f"{target}: finished a replacement that was interrupted (the new version was complete: now in place)"
    else:
        old.rename(target)
        olds.remove(old)
        done = f"{target}: restored the previous version after an interrupted replacement (the new one was incomplete)"
    fsync_dir(target.parent)
    for leftover in olds:
        shutil.rmtree(leftover, ignore_errors=True)
    return done


def recover_missing(target: Path) -> None:
    """Readers call this when TARGET is missing: an interrupted replacement may have left it aside."""
    target = Path(target)
    if target.exists() or not any(target.parent.glob(f".{glob.escape(target.name)}.old-*")):
        return
    with locked(target):
        _say_done(finish_interrupted_replacement(target))


def _say_done(done: str | None) -> None:
    if done:
        say(done)


def disk_full(target: Path, exc: OSError) -> ResourceError:
    where = f" (writing {exc.filename})" if exc.filename else ""
    return ResourceError(f"{target}: no space left on device{where}; nothing was written there. "
                         f"Free some space and re-run")
