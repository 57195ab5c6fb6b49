"""Build a directory under a hidden temporary name, and put it in place only when complete.

Readers never see a half-written run or artifact: until the final rename, the target either does
not exist or is the previous complete version. A failure removes the staging folder; a full disk
becomes one clear ResourceError naming the target. The target's lock (edgetl/artifacts/locking.py) is held
throughout, so two processes never build the same directory, and staging folders that a killed
process left behind (SIGKILL skips clean-up) are removed by the next writer.
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
from edgetl.artifacts.manifest import fsync_dir
from edgetl.errors import ResourceError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target):
        for stale in target.parent.glob(f".{glob.escape(target.name)}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = target.parent / f".{target.name}.partial-{os.getpid()}"
        staging.mkdir()
        try:
            yield staging
            fsync_dir(staging)
            if target.exists():
                old = target.parent / f".{target.name}.old-{os.getpid()}"
                target.rename(old)
                shutil.rmtree(old)
            staging.rename(target)
            fsync_dir(target.parent)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if exc.errno in DISK_FULL:
                raise disk_full(target, exc) from None
            raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def disk_full(target: Path, exc: OSError) -> ResourceError:
    where = f" (writing {exc.filename})" if exc.filename else ""
    return ResourceError(f"{target}: no space left on device{where}; nothing was written there. "
                         f"Free some space and re-run")
