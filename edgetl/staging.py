"""Build a directory under a hidden temporary name, and put it in place only when complete.

Readers never see a half-written run or artifact: until the final rename, the target either does
not exist or is the previous complete version. A failure removes the staging folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from edgetl.manifest import fsync_dir


@contextlib.contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
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
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
