"""Manifests: what a directory holds, where it came from, and how it was made.

A directory is an artifact only if it holds a valid `manifest.json`. The manifest is written last,
atomically (temp name, fsync, rename), and records the sha256 of every file it names, so a crash
never leaves a half-written directory that looks valid, and tampering is detectable.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

from edgetl.errors import CheckFailedError, InputError

MANIFEST_NAME = "manifest.json"
SCHEMA = "edgetl.manifest"
SCHEMA_VERSION = 1
KINDS = ("run", "artifact")


@dataclasses.dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A stage's record. `sections` holds kind-specific parts (backbone, dataset, history, ...)."""

    kind: str
    files: dict[str, FileEntry]
    options: dict[str, Any]
    metrics: dict[str, Any]
    versions: dict[str, str]
    parent: dict[str, Any] | None = None
    sections: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            "created": self.created,
            "files": {name: dataclasses.asdict(entry) for name, entry in sorted(self.files.items())},
            "parent": self.parent,
            "options": self.options,
            "metrics": self.metrics,
            "versions": self.versions,
            **self.sections,
        }

    @classmethod
    def from_json(cls, doc: Any, source: str = "manifest") -> "Manifest":
        problems = _schema_problems(doc)
        if problems:
            raise InputError(f"{source}: not a valid edgetl manifest: {'; '.join(problems)}")
        fixed = {"schema", "schema_version", "kind", "created", "files", "parent", "options", "metrics", "versions"}
        return cls(
            kind=doc["kind"],
            created=doc["created"],
            files={name: FileEntry(**entry) for name, entry in doc["files"].items()},
            parent=doc["parent"],
            options=doc["options"],
            metrics=doc["metrics"],
            versions=doc["versions"],
            sections={k: v for k, v in doc.items() if k not in fixed},
        )


def _schema_problems(doc: Any) -> list[str]:
    """Every problem with a manifest document, collected before raising."""
    if not isinstance(doc, dict):
        return ["top level is not an object"]
    problems = []
    if doc.get("schema") != SCHEMA:
        problems.append(f"'schema' is {doc.get('schema')!r}, expected {SCHEMA!r}")
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.append("'schema_version' missing or not a positive integer")
    elif version > SCHEMA_VERSION:
        problems.append(f"schema_version {version} is newer than this edgetl reads ({SCHEMA_VERSION}); upgrade edgetl")
    if doc.get("kind") not in KINDS:
        problems.append(f"'kind' must be one of {', '.join(KINDS)}")
    for key, typ in (("created", str), ("files", dict), ("options", dict), ("metrics", dict), ("versions", dict)):
        if not isinstance(doc.get(key), typ):
            problems.append(f"'{key}' missing or not a {typ.__name__}")
    if "parent" in doc and not (doc["parent"] is None or isinstance(doc["parent"], dict)):
        problems.append("'parent' must be an object or null")
    for name, entry in (doc.get("files") or {}).items() if isinstance(doc.get("files"), dict) else ():
        if not _is_safe_relative(name):
            problems.append(f"file name {name!r} escapes the directory")
        if not (isinstance(entry, dict) and set(entry) == {"sha256", "bytes"}):
            problems.append(f"file entry {name!r} must have exactly 'sha256' and 'bytes'")
        elif not (_is_sha256(entry["sha256"]) and isinstance(entry["bytes"], int)
                  and not isinstance(entry["bytes"], bool) and entry["bytes"] >= 0):
            problems.append(f"file entry {name!r}: 'sha256' must be 64 hex digits and 'bytes' a size")
    return problems


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _is_safe_relative(name: str) -> bool:
    path = Path(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> FileEntry:
    return FileEntry(sha256=sha256_of(path), bytes=path.stat().st_size)


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temp name in the same directory, fsync, then rename over `path`."""
    write_file_atomic(path, lambda fh: fh.write(data))


def write_file_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Like write_bytes_atomic, for content that `write(fh)` streams into a binary file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path, manifest: Manifest, file_names: list[str]) -> Manifest:
    """Hash the named files (they must be complete) into the manifest and write it last, atomically."""
    files = {name: file_entry(directory / name) for name in file_names}
    final = dataclasses.replace(manifest, files=files, created=manifest.created or now_utc())
    text = json.dumps(final.to_json(), indent=2, sort_keys=False) + "\n"
    write_bytes_atomic(directory / MANIFEST_NAME, text.encode())
    return final


def read_manifest(directory: Path, verify: bool = True) -> Manifest:
    """Load and validate a directory's manifest; with `verify`, check every file's sha256."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{directory}: no {MANIFEST_NAME}; not an edgetl run or artifact (incomplete or never finished)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # deep nesting: RecursionError
        raise InputError(f"{path}: unreadable manifest ({exc})") from None
    manifest = Manifest.from_json(doc, source=str(path))
    if verify:
        verify_files(Path(directory), manifest)
    return manifest


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Raise CheckFailedError naming every file whose size or sha256 differs from the manifest."""
    bad = []
    for name, entry in manifest.files.items():
        path = directory / name
        if not path.is_file():
            bad.append(f"{name} (missing)")
        elif path.stat().st_size != entry.bytes or sha256_of(path) != entry.sha256:
            bad.append(f"{name} (sha256 differs from manifest)")
    if bad:
        raise CheckFailedError(f"{directory}: integrity check failed: {', '.join(bad)}")
