"""One writer per directory: an exclusive `flock` on a hidden `.NAME.lock` file beside it.

The kernel releases a flock when its holder dies, however it dies (SIGKILL included), so a lock is
never stale: a lock file left by a killed process is simply taken by the next one. A busy lock fails
at once (no waiting) with the holder's PID, which the holder writes into the file.

Locks are re-entrant within a process (a count per lock file), so a command can hold the lock on its
output for its whole duration while `staged_directory` takes the same lock again around the write.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from edgetl.errors import LockedError

_held: dict[Path, list[int]] = {}  # lock file -> [fd, depth], for this process


def lock_path(target: Path) -> Path:
    target = Path(target).resolve()
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def locked(target: Path) -> Iterator[None]:
    """Hold the lock on `target` (a run or artifact directory, existing or not) for the block."""
    path = lock_path(target)
    if path in _held:
        _held[path][1] += 1
        try:
            yield
        finally:
            _held[path][1] -= 1
        return
    fd = _acquire(path, target)
    _held[path] = [fd, 1]
    try:
        yield
    finally:
        del _held[path]
        # Unlink before unlocking: a process that opened the old file re-checks the inode and retries.
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _acquire(path: Path, target: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"{target}: in use by another edgetl process (PID {holder}); wait for it to "
                              f"finish or stop it (lock file {path})") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else its previous holder unlinked it after we opened it: lock the new file instead
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)
