"""The package layout's rules (docs/architecture.md), read from the source with `ast`: every import counts,
function-local ones included, so a circle cannot hide behind a late import.

- every module of edgetl belongs to a known unit: a base module, a ground package, a stage package, or the app;
- the ground (base modules, data, backbones, network, artifacts, converters, targets) imports no stage and no app
  module; stages import no app module;
- the units form no circle, and neither do the modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Installed as edgetl.converters and edgetl.targets (pyproject.toml's package-dir), kept at the top level.
SOURCES = {"edgetl": ROOT / "edgetl", "edgetl.converters": ROOT / "converters", "edgetl.targets": ROOT / "targets"}
BASE = ("edgetl.errors", "edgetl.tf_env", "edgetl.progress", "edgetl.console", "edgetl.version")
GROUND = ("edgetl.data", "edgetl.backbones", "edgetl.network", "edgetl.artifacts", "edgetl.converters", "edgetl.targets")
STAGES = ("edgetl.training", "edgetl.compression", "edgetl.exporting", "edgetl.runner", "edgetl.bundling")
APP = ("edgetl", "edgetl.__main__", "edgetl.cli", "edgetl.cli_oneshot", "edgetl.process", "edgetl.demo")


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def unit_of(module: str) -> str:
    if module in BASE or module in APP:
        return module
    for package in GROUND + STAGES:
        if module == package or module.startswith(package + "."):
            return package
    raise AssertionError(f"{module} belongs to no unit of docs/architecture.md: put it in a subpackage "
                         f"(or add it to tests/test_architecture.py's lists with a reason)")


def imports(path: Path, known: set[str]) -> set[str]:
    """edgetl modules `path` imports, anywhere in the file (a `from pkg import module` counts as the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import edgetl.backbones.layers` names a module; trim attributes
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {module: imports(path, known) - {module} for module, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan), each sorted."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return result


def test_every_module_belongs_to_a_unit(graph):
    for module in graph:
        unit_of(module)


def test_the_ground_imports_no_stage_and_stages_import_no_app(graph):
    wrong = []
    for module, targets in graph.items():
        unit = unit_of(module)
        for target in targets:
            other = unit_of(target)
            if (unit in BASE + GROUND and other in STAGES + APP) or (unit in STAGES and other in APP) or \
                    (unit in BASE and other in GROUND):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against the layering of docs/architecture.md:\n" + "\n".join(sorted(wrong))


def test_no_circle_between_units(graph):
    units: dict[str, set[str]] = {}
    for module, targets in graph.items():
        units.setdefault(unit_of(module), set()).update(unit_of(t) for t in targets)
    for unit, targets in units.items():
        targets.discard(unit)
    assert cycles(units) == []


def test_no_circle_between_modules(graph):
    assert cycles(graph) == []


def test_the_checker_sees_a_circle_and_a_ground_module_importing_a_stage():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    source = "def later():\n    from edgetl.training.trainer import run_training\n"
    tree_imports = imports_of_source(source, {"edgetl.training", "edgetl.training.trainer"})
    assert tree_imports == {"edgetl.training.trainer"}  # a function-local import counts


def imports_of_source(source: str, known: set[str]) -> set[str]:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(source)
    try:
        return imports(Path(fh.name), known)
    finally:
        Path(fh.name).unlink()


def test_the_public_functions_survive_importing_every_subpackage():
    """A subpackage named like a public function (edgetl/bundle/) would replace `edgetl.bundle` once imported."""
    import importlib
    import inspect

    import edgetl

    for module in modules():
        if not module.endswith("__main__"):
            importlib.import_module(module)
    for name in ("train", "compress", "export", "bench", "bundle", "enroll"):
        assert inspect.isfunction(getattr(edgetl, name)), f"edgetl.{name} is no longer the API function"
