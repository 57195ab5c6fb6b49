"""Manifests: written last and atomically, hashes that catch tampering, strict validation."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetl.artifacts.manifest import MANIFEST_NAME, Manifest, read_manifest, sha256_of, write_manifest
from edgetl.errors import CheckFailedError, EdgetlError, InputError


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


# --- property tests: whatever manifest.json holds, reading it gives a Manifest or an edgetl error ---

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=10)
_file_name = st.sampled_from(["a.bin", "b.txt", "manifest.json", ".", "", "../up", "/abs", "x\0y", "\ud800", "dir/"]) \
    | st.text(max_size=10)
_entry = st.fixed_dictionaries({
    "sha256": st.sampled_from([hashlib.sha256(b"\0" * 100).hexdigest(), "0" * 64]) | _json,
    "bytes": st.sampled_from([100, 101, -1, 1.5, True]) | _json}) | _json


@st.composite
def _near_valid(draw):
    """A valid document (file entries that may or may not match the real files), then up to two fields
    replaced by arbitrary JSON."""
    doc = {"schema": "edgetl.manifest", "schema_version": draw(st.sampled_from([0, 1, 2, -1, True])),
           "kind": draw(st.sampled_from(["run", "artifact"])), "created": draw(st.text(max_size=8)),
           "files": draw(st.dictionaries(_file_name, _entry, max_size=3)), "parent": None, "options": {},
           "metrics": {}, "versions": {}}
    for key in draw(st.lists(st.sampled_from(sorted(doc)), max_size=2)):
        doc[key] = draw(_json)
    return doc


_property = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read_or_edgetl_error(directory):
    _write(directory)  # real files a.bin and b.txt, so some entries can match
    try:
        manifest = read_manifest(directory)
    except EdgetlError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    assert isinstance(manifest, Manifest) and manifest.kind in ("run", "artifact")
    assert isinstance(manifest.options, dict) and isinstance(manifest.created, str)
    for entry in manifest.files.values():
        assert len(entry.sha256) == 64 and type(entry.bytes) is int and entry.bytes >= 0
    return manifest


@_property
@given(doc=_near_valid() | _json)
def test_any_json_document_is_a_manifest_or_an_edgetl_error(tmp_path, doc):
    _read_or_edgetl_error(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(doc))
    _read_or_edgetl_error(tmp_path)


@_property
@given(content=st.binary(max_size=300))
def test_any_bytes_are_a_manifest_or_an_edgetl_error(tmp_path, content):
    _write(tmp_path)
    (tmp_path / MANIFEST_NAME).write_bytes(content)
    with pytest.raises(EdgetlError):
        read_manifest(tmp_path)


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 100_000, "\ufeff{}", '{"schema": NaN}'])
def test_pathological_json_is_an_input_error(tmp_path, text):
    (tmp_path / MANIFEST_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(InputError):
        read_manifest(tmp_path)
