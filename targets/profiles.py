"""Target device profiles: what a device's runtime can run, read from small TOML files.

A profile says which runtime, file formats and quantization modes a device class takes (in order of
preference), which ops it can execute, and its size and memory budgets. `checks.check_artifact`
compares an exported file against one. The shipped profiles live in `targets/profiles/*.toml` (each
with a comment saying where its numbers come from); users can pass their own file by path.

Validated here, at the boundary, and only here: a profile that loads is well-formed, so the code that
uses it never re-checks types. Every problem in a file is collected before raising, so one run shows
them all. TOML has no null: an optional setting that does not apply (no delegate, no size budget) is
left out of the file.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from edgetl.errors import InputError

SCHEMA_VERSION = 1  # the newest profile schema this code reads

# Each runtime executes one file format; a profile's runtime is the one for its preferred format.
RUNTIME_FORMAT = {"litert": "tflite", "onnxruntime": "onnx", "tflm": "tflite", "openvino": "onnx"}
FORMAT_RUNTIME = {"tflite": "litert", "onnx": "onnxruntime"}  # what runs a format when a profile lists no `runtimes`
FORMATS = ("tflite", "onnx")
QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
DELEGATES = ("xnnpack", "gpu", "edgetpu", "nnapi", "coreml", "hexagon")
IO_DTYPES = ("float32", "int8", "uint8")


@dataclasses.dataclass(frozen=True)
class TargetProfile:
    """One device class. Lists are tuples so a profile is immutable and hashable."""

    name: str
    description: str
    runtime: str  # "litert" | "onnxruntime" | "tflm" | "openvino": the runtime for formats[0]
    formats: tuple[str, ...]  # preference order
    quantization: tuple[str, ...]  # preference order
    threads: int
    runtimes: tuple[str, ...] = ()  # every runtime the device may run a file in; () = `runtime` + one per format
    execution_providers: tuple[str, ...] = ()  # ONNX Runtime providers, priority order
    delegate: str | None = None  # LiteRT delegate
    io_dtype: str | None = None  # required input/output dtype; None = any
    int8_required: bool = False  # every tensor inside the graph must be 8-bit integer
    op_allowlist: tuple[str, ...] = ()  # empty = any op
    max_model_bytes: int | None = None
    max_ram_bytes: int | None = None
    weights_in_flash: bool = False  # weights execute in place from flash: the RAM budget covers activations only
    notes: str = ""
    source: str = ""  # the file it was read from

    @property
    def usable_runtimes(self) -> tuple[str, ...]:
        """The runtimes whose measurements speak for this device: `runtimes`, else `runtime` and each format's default."""
        if self.runtimes:
            return self.runtimes
        return tuple(dict.fromkeys((self.runtime, *(FORMAT_RUNTIME[f] for f in self.formats))))


# key -> (kind, required). Kinds: str, int, bool, strs (list of strings).
_KEYS: dict[str, tuple[str, bool]] = {
    "schema_version": ("int", True), "name": ("str", True), "description": ("str", True),
    "runtime": ("str", True), "formats": ("strs", True), "runtimes": ("strs", False),
    "quantization": ("strs", True), "threads": ("int", True),
    "execution_providers": ("strs", False), "delegate": ("str", False), "io_dtype": ("str", False),
    "int8_required": ("bool", False), "op_allowlist": ("strs", False), "max_model_bytes": ("int", False),
    "max_ram_bytes": ("int", False), "weights_in_flash": ("bool", False), "notes": ("str", False),
}


_KIND_WORDS = {"int": "an integer", "bool": "true or false", "str": "a string", "strs": "a list of strings"}


def _kind_ok(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)  # TOML true is not a number
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


@functools.cache
def _tflite_builtin_ops() -> frozenset[str]:
    from ai_edge_litert import schema_py_generated as schema

    return frozenset(k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int))


def _problems(data: dict[str, Any], stem: str | None) -> list[str]:
    """Every problem in one profile table, each naming its key. Empty list = valid."""
    problems = [f"unknown key '{key}'" for key in data if key not in _KEYS]
    for key, (kind, required) in _KEYS.items():
        if key not in data:
            if required:
                problems.append(f"missing required key '{key}'")
        elif not _kind_ok(data[key], kind):
            wanted = _KIND_WORDS[kind]
            problems.append(f"'{key}' must be {wanted}, not {type(data[key]).__name__} {data[key]!r}")
    good = {k: v for k, v in data.items() if k in _KEYS and _kind_ok(v, _KEYS[k][0])}

    version = good.get("schema_version")
    if version is not None and version > SCHEMA_VERSION:
        problems.append(f"'schema_version' {version} is newer than this edgetl reads ({SCHEMA_VERSION}); "
                        "upgrade edgetl")
    elif version is not None and version < 1:
        problems.append(f"'schema_version' must be 1 or more, not {version}")

    def one_of(key: str, allowed: tuple[str, ...], values: list[str]) -> None:
        for value in values:
            if value not in allowed:
                problems.append(f"'{key}' has unknown value '{value}'; expected one of {', '.join(allowed)}")
        if len(set(values)) != len(values):
            problems.append(f"'{key}' lists a value twice")

    if "name" in good and stem is not None and good["name"] != stem:
        problems.append(f"'name' is '{good['name']}' but the file is {stem}.toml; they must match")
    if "name" in good and not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", good["name"]):
        problems.append(f"'name' '{good['name']}' must be lowercase letters, digits, '.', '_' or '-'")
    runtime = good.get("runtime")
    if runtime is not None:
        one_of("runtime", tuple(RUNTIME_FORMAT), [runtime])
    formats = good.get("formats")
    if formats is not None:
        one_of("formats", FORMATS, formats)
        if not formats:
            problems.append("'formats' must list at least one format")
        elif runtime in RUNTIME_FORMAT and formats[0] != RUNTIME_FORMAT[runtime]:
            problems.append(f"'runtime' {runtime} runs {RUNTIME_FORMAT[runtime]} files, "
                            f"but 'formats' prefers {formats[0]}")
    runtimes = good.get("runtimes")
    if runtimes is not None:
        one_of("runtimes", tuple(RUNTIME_FORMAT), runtimes)
        if runtime is not None and runtime not in runtimes:
            problems.append(f"'runtimes' must include the profile's 'runtime' {runtime}")
        for other in runtimes:
            if other in RUNTIME_FORMAT and formats is not None and RUNTIME_FORMAT[other] not in formats:
                problems.append(f"'runtimes' lists {other}, which runs {RUNTIME_FORMAT[other]} files, "
                                f"but 'formats' has no {RUNTIME_FORMAT[other]}")
    quantization = good.get("quantization")
    if quantization is not None:
        one_of("quantization", QUANTIZATIONS, quantization)
        if not quantization:
            problems.append("'quantization' must list at least one mode")
        if good.get("int8_required") and any(q != "int8" for q in quantization):
            problems.append("'int8_required' is true, so 'quantization' may only list int8")
    if good.get("threads", 1) < 1:
        problems.append(f"'threads' must be 1 or more, not {good['threads']}")
    for key in ("max_model_bytes", "max_ram_bytes"):
        if good.get(key, 1) < 1:
            problems.append(f"'{key}' must be a positive number of bytes, not {good[key]}")
    providers = good.get("execution_providers", [])
    if providers and formats is not None and "onnx" not in formats:
        problems.append("'execution_providers' are for ONNX Runtime, but 'formats' has no onnx")
    for provider in providers:
        if not provider.endswith("ExecutionProvider"):
            problems.append(f"'execution_providers' entry '{provider}' is not an ONNX Runtime provider name "
                            "(e.g. CUDAExecutionProvider)")
    if "delegate" in good:
        one_of("delegate", DELEGATES, [good["delegate"]])
        if formats is not None and "tflite" not in formats:
            problems.append("'delegate' is a LiteRT setting, but 'formats' has no tflite")
    if "io_dtype" in good:
        one_of("io_dtype", IO_DTYPES, [good["io_dtype"]])
    allowlist = good.get("op_allowlist", [])
    if len(set(allowlist)) != len(allowlist):
        problems.append("'op_allowlist' lists an op twice")
    # UPPER_SNAKE names are TFLite builtins, so a typo would silently reject a real op: check them.
    # CamelCase names (ONNX op types) and custom op names are taken as written.
    unknown = [op for op in allowlist if re.fullmatch(r"[A-Z0-9_]+", op) and op not in _tflite_builtin_ops()]
    if unknown:
        problems.append(f"'op_allowlist' names ops that are not TFLite builtins: {', '.join(unknown)}")
    return problems


def parse_profile(text: str, source: str, stem: str | None = None) -> TargetProfile:
    """Validate TOML text; `source` names the file in errors, `stem` is the file name it must match."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source}: not valid TOML ({exc})") from exc
    problems = _problems(data, stem)
    if problems:
        raise InputError(f"{source}: invalid target profile: {'; '.join(problems)}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "schema_version"}
    return TargetProfile(**fields, source=source)


def _shipped_dir() -> Any:
    return resources.files("edgetl.targets") / "profiles"


def load_profile(name_or_path: str | Path) -> TargetProfile:
    """A shipped profile by name ("mcu"), or a profile file by path (anything with a '/' or ending in .toml)."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_file():
            raise InputError(f"{path}: no such target profile file")
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read target profile ({exc})") from exc
        return parse_profile(content, str(path), path.stem)
    resource = _shipped_dir() / f"{text}.toml"
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", text) or not resource.is_file():
        names = ", ".join(p.name for p in list_profiles())
        raise InputError(f"unknown target profile '{text}'; shipped profiles: {names} (or give a .toml path)")
    return parse_profile(resource.read_text(encoding="utf-8"), str(resource), text)


def list_profiles() -> list[TargetProfile]:
    """Every shipped profile, sorted by name."""
    entries = sorted((e for e in _shipped_dir().iterdir() if e.name.endswith(".toml")), key=lambda e: e.name)
    return [parse_profile(e.read_text(encoding="utf-8"), str(e), e.name.removesuffix(".toml")) for e in entries]
