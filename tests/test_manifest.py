"""Manifests: written last and atomically, hashes that catch tampering, strict validation."""

from __future__ import annotations

import json

import pytest

from edgetl.errors import CheckFailedError, InputError
from edgetl.manifest import MANIFEST_NAME, Manifest, read_manifest, sha256_of, write_manifest


def _write(tmp_path, names=("a.bin", "b.txt")):
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(bytes([i]) * (100 + i))
    base = Manifest(kind="artifact", files={}, options={"x": 1}, metrics={"m": 0.5}, versions={"edgetl": "t"},
                    sections={"extra": {"k": "v"}})
    return write_manifest(tmp_path, base, list(names))


def test_round_trip_records_real_hashes_and_sizes(tmp_path):
    written = _write(tmp_path)
    loaded = read_manifest(tmp_path)
    assert loaded == written
    assert loaded.files["a.bin"].sha256 == sha256_of(tmp_path / "a.bin")
    assert loaded.files["b.txt"].bytes == 101
    assert loaded.sections == {"extra": {"k": "v"}} and loaded.created
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_tampered_or_missing_file_fails_the_integrity_check(tmp_path):
    _write(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"\x07" * 100)  # same size, different content
    (tmp_path / "b.txt").unlink()
    with pytest.raises(CheckFailedError) as info:
        read_manifest(tmp_path)
    assert "a.bin (sha256 differs" in str(info.value) and "b.txt (missing)" in str(info.value)
    assert read_manifest(tmp_path, verify=False).kind == "artifact"


def test_directory_without_manifest_is_not_an_artifact(tmp_path):
    with pytest.raises(InputError, match="no manifest.json"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema_version=99), "newer than this edgetl reads"),
    (lambda d: d.update(schema="other"), "'schema' is 'other'"),
    (lambda d: d.update(kind="banana"), "'kind' must be one of"),
    (lambda d: d.update(files=[]), "'files' missing or not a dict"),
    (lambda d: d["files"].update({"../escape": {"sha256": "0", "bytes": 1}}), "escapes the directory"),
    (lambda d: d["files"]["a.bin"].update(extra=1), "exactly 'sha256' and 'bytes'"),
])
def test_invalid_manifests_are_rejected_with_every_problem_named(tmp_path, mutate, message):
    _write(tmp_path)
    doc = json.loads((tmp_path / MANIFEST_NAME).read_text())
    mutate(doc)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(InputError, match=message):
        read_manifest(tmp_path)


def test_unparseable_manifest_is_an_input_error(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(InputError, match="unreadable manifest"):
        read_manifest(tmp_path)
