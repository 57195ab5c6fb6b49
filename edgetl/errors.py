"""One error hierarchy; the CLI alone maps it to exit codes (DESIGN.md: 1 a check failed, 2 bad input)."""

from __future__ import annotations


class EdgetlError(Exception):
    """Base of every error edgetl raises on purpose. `exit_code` is what the CLI exits with."""

    exit_code = 2


class UsageError(EdgetlError):
    """An option or combination of options that cannot work."""


class InputError(EdgetlError):
    """A file or directory the user gave is missing, unreadable or malformed."""


class WeightsUnavailableError(InputError):
    """Pretrained weights were asked for but cannot be had (offline, missing file)."""


class NotBuiltError(UsageError):
    """A command of the contract that a later issue brings."""


class CheckFailedError(EdgetlError):
    """A check ran and failed: parity gate, target constraint, verification, integrity."""

    exit_code = 1


class LockedError(UsageError):
    """Another process is writing the same run or artifact directory."""


class ResourceError(EdgetlError):
    """The machine ran out of something the work needs: memory (batch too large) or disk space."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT), with what the user can do next. Still a KeyboardInterrupt for API callers."""
