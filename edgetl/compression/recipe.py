"""Compression recipes: an ordered list of typed steps, written as a short string or a TOML file.

    int8                              post-training full-integer quantization
    prune:sparsity=0.75+qat           prune to 75 %, then quantization-aware training (sparsity kept: PQAT)
    cluster:clusters=8+qat            clustering, then cluster-preserving QAT (CQAT)
    ptq:mode=int8,per_channel=false,calibration=800,fallback=head|block_16_project

Steps run in the fixed order prune -> cluster -> qat -> ptq, each at most once. Training steps
(prune, cluster, qat) fine-tune the run's model on its training split; ptq says how the result is
converted. A recipe without ptq exports float32, except after qat, which exports int8.
Everything is validated here and every problem is reported at once.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from edgetl.errors import UsageError

STEP_ORDER = ("prune", "cluster", "qat", "ptq")
TRAINING_STEPS = ("prune", "cluster", "qat")
PTQ_MODES = ("none", "fp16", "dynamic", "int8")
PRUNE_STRUCTURES = ("none", "2:4", "block")
ALIASES = {
    "int8": "ptq:mode=int8", "fp16": "ptq:mode=fp16", "dynamic": "ptq:mode=dynamic", "float": "ptq:mode=none",
    "pqat": "prune+qat", "cqat": "cluster+qat",
}

# step -> option -> (type, default). Types: float, int, bool, str, list (of str, '|'-separated in strings).
# learning_rate None: a fraction of the run's peak learning rate, per step (finetune.py, with the
# measurements). Prune's 8 epochs: 50 % sparsity on the demo model lost 2.0 points after 4 epochs
# at 1e-3 and 0.3 after 8.
STEP_OPTIONS: dict[str, dict[str, tuple[str, Any]]] = {
    "prune": {"sparsity": ("float", 0.5), "structure": ("str", "none"), "block": ("str", "1x4"),
              "epochs": ("int", 8), "learning_rate": ("float", None)},
    "cluster": {"clusters": ("int", 16), "preserve_sparsity": ("bool", False), "epochs": ("int", 2),
                "learning_rate": ("float", None)},
    "qat": {"epochs": ("int", 2), "learning_rate": ("float", None)},
    "ptq": {"mode": ("str", "int8"), "calibration": ("int", 200), "per_channel": ("bool", True),
            "fallback": ("list", ())},
}


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    options: tuple[tuple[str, Any], ...]  # every option, defaults filled in, in STEP_OPTIONS order

    def get(self, key: str) -> Any:
        return dict(self.options)[key]

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults."""
        defaults = STEP_OPTIONS[self.name]
        return {k: v for k, v in self.options if v != defaults[k][1]}


@dataclasses.dataclass(frozen=True)
class Recipe:
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    @property
    def training_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.name in TRAINING_STEPS)

    @property
    def quantize(self) -> str:
        """The export mode: ptq's mode, int8 after qat, float32 otherwise."""
        ptq = self.step("ptq")
        if ptq is not None:
            return ptq.get("mode")
        return "int8" if self.step("qat") else "none"

    def spec(self) -> str:
        """The short string, non-default options only; parse(spec()) == self."""
        parts = []
        for s in self.steps:
            changed = s.changed()
            if s.name == "ptq" and set(changed) <= {"mode"}:
                parts.append({"none": "float"}.get(s.get("mode"), s.get("mode")))  # an alias: int8, fp16, ...
                continue
            parts.append(s.name + (":" + ",".join(f"{k}={_format(v)}" for k, v in changed.items()) if changed else ""))
        return "+".join(parts)

    def canonical(self) -> str:
        """Every option spelled out: what a finished candidate's cache key is made of."""
        return "+".join(s.name + ":" + ",".join(f"{k}={_format(v)}" for k, v in s.options if v is not None)
                        for s in self.steps)

    def slug(self) -> str:
        """A folder-name-safe name of the training steps and non-default ptq options ('' for plain PTQ);
        past 60 characters, the step names and a hash of every option."""
        words = []
        for s in self.steps:
            changed = {k: v for k, v in s.changed().items() if not (s.name == "ptq" and k == "mode")}
            if s.name == "ptq" and not changed:
                continue
            words.append(s.name + "".join(f"_{k}{_slug_value(v)}" for k, v in changed.items()))
        slug = "-".join(words)
        if len(slug) <= 60:
            return slug
        import hashlib

        return "-".join(s.name for s in self.steps) + "-" + hashlib.sha256(self.canonical().encode()).hexdigest()[:8]

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec(), "quantize": self.quantize,
                "steps": [{"name": s.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in s.options}}
                          for s in self.steps]}


def _slug_value(value: Any) -> str:
    if isinstance(value, tuple):  # layer lists: their count and a short hash keep folder names short
        import hashlib

        return f"{len(value)}x{hashlib.sha256('|'.join(value).encode()).hexdigest()[:6]}"
    return _format(value).replace(":", "x")


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "|".join(value)
    return str(value)


def parse(text: str) -> Recipe:
    """A recipe string, or the path of a .toml recipe file."""
    if text.endswith(".toml"):
        return load_file(Path(text))
    raw_steps: list[tuple[str, dict[str, str]]] = []
    problems: list[str] = []
    for part in _expand_aliases(text.strip()).split("+"):
        name, _, opts = part.strip().partition(":")
        options: dict[str, str] = {}
        for item in filter(None, (o.strip() for o in opts.split(","))) if opts else ():
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                problems.append(f"{name}: {item!r} is not key=value")
            else:
                options[key.strip()] = value.strip()
        raw_steps.append((name.strip(), options))
    return _build(raw_steps, problems, where=f"--recipe {text!r}", from_strings=True)


def load_file(path: Path) -> Recipe:
    """A TOML recipe: one [[step]] table per step, each with `name` and its options."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--recipe {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--recipe {path}: not valid TOML ({exc})") from None
    problems = [f"unknown top-level key {k!r} (expected [[step]] tables)" for k in document if k != "step"]
    raw_steps = []
    tables = document.get("step", [])
    if not isinstance(tables, list) or not tables:
        problems.append("no [[step]] tables")
        tables = []
    for table in tables:
        if not isinstance(table, dict) or not isinstance(table.get("name"), str):
            problems.append("every [[step]] needs name = \"prune\" | \"cluster\" | \"qat\" | \"ptq\"")
            continue
        raw_steps.append((table["name"], {k: v for k, v in table.items() if k != "name"}))
    return _build(raw_steps, problems, where=f"--recipe {path}", from_strings=False)


def _expand_aliases(text: str) -> str:
    return "+".join(ALIASES.get(part.strip(), part.strip()) for part in text.split("+"))


def _build(raw_steps: list[tuple[str, dict[str, Any]]], problems: list[str], where: str,
           from_strings: bool) -> Recipe:
    steps: list[Step] = []
    for name, options in raw_steps:
        if name not in STEP_OPTIONS:
            known = ", ".join(list(STEP_OPTIONS) + list(ALIASES))
            problems.append(f"unknown step {name!r} (known: {known})")
            continue
        schema = STEP_OPTIONS[name]
        values = {}
        for key, value in options.items():
            if key not in schema:
                problems.append(f"{name}: unknown option {key!r} (known: {', '.join(schema)})")
                continue
            converted = _convert(value, schema[key][0], from_strings)
            if converted is None:
                problems.append(f"{name}: {key}={value!r} is not {_KIND_WORDS[schema[key][0]]}")
            else:
                values[key] = converted
        steps.append(Step(name, tuple((k, values.get(k, default)) for k, (_, default) in schema.items())))
    problems += _rule_problems(steps)
    if problems:
        raise UsageError(f"{where}: " + "; ".join(problems))
    return Recipe(tuple(steps))


_KIND_WORDS = {"float": "a number", "int": "an integer", "bool": "true or false", "str": "a string",
               "list": "a list of names"}


def _convert(value: Any, kind: str, from_string: bool) -> Any:
    """The typed value, or None when `value` is not of `kind`."""
    if from_string:
        text = str(value)
        if kind == "bool":
            return {"true": True, "false": False}.get(text.lower())
        if kind == "list":
            return tuple(v for v in text.split("|") if v)
        if kind == "str":
            return text or None
        try:
            return int(text) if kind == "int" else float(text)
        except ValueError:
            return None
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind == "int":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "float":
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if kind == "list":
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        return tuple(value) if ok else None
    return value if isinstance(value, str) and value else None


def _rule_problems(steps: list[Step]) -> list[str]:
    found = []
    names = [s.name for s in steps]
    if not steps:
        return ["empty recipe"]
    for name in set(names):
        if names.count(name) > 1:
            found.append(f"{name} appears {names.count(name)} times")
    if names != sorted(names, key=STEP_ORDER.index):
        found.append(f"steps must run in the order {' -> '.join(STEP_ORDER)} (got {' -> '.join(names)})")
    for s in steps:
        if s.name == "prune":
            if not 0.0 < s.get("sparsity") < 1.0:
                found.append("prune: sparsity must be between 0 and 1 (exclusive)")
            if s.get("structure") not in PRUNE_STRUCTURES:
                found.append(f"prune: structure must be one of {', '.join(PRUNE_STRUCTURES)}")
            if s.get("structure") == "2:4" and s.get("sparsity") != 0.5:
                found.append("prune: structure=2:4 is exactly 50 % sparse; leave sparsity at 0.5")
            if _block_shape(s.get("block")) is None:
                found.append(f"prune: block={s.get('block')!r} must look like 1x4")
        if s.name == "cluster" and not 2 <= s.get("clusters") <= 256:
            found.append("cluster: clusters must be between 2 and 256")
        rate = s.get("learning_rate") if s.name in TRAINING_STEPS else None
        if s.name in TRAINING_STEPS and (s.get("epochs") < 1 or (rate is not None and rate <= 0)):
            found.append(f"{s.name}: epochs must be >= 1 and learning_rate > 0")
        if s.name == "ptq":
            if s.get("mode") not in PTQ_MODES:
                found.append(f"ptq: mode must be one of {', '.join(PTQ_MODES)}")
            elif s.get("mode") != "int8" and (s.get("fallback") or not s.get("per_channel")
                                              or s.get("calibration") != 200):
                found.append("ptq: calibration, per_channel and fallback apply to mode=int8 only")
            if s.get("calibration") < 1:
                found.append("ptq: calibration must be >= 1")
    ptq = next((s for s in steps if s.name == "ptq"), None)
    if "qat" in names and ptq is not None and ptq.get("mode") != "int8":
        found.append("qat trains for int8: it cannot be followed by ptq:mode=" + str(ptq.get("mode")))
    return found


def _block_shape(text: str) -> tuple[int, int] | None:
    rows, x, cols = text.partition("x")
    if not (x and rows.isdigit() and cols.isdigit() and int(rows) >= 1 and int(cols) >= 1):
        return None
    return int(rows), int(cols)


def block_shape(step: Step) -> tuple[int, int]:
    shape = _block_shape(step.get("block"))
    assert shape is not None  # validated in _rule_problems
    return shape
