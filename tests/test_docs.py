"""The documentation works: its commands and snippets run, every option is documented, every link resolves.

(a) Every `edgetl ...` line of a ```sh block in docs/ and README.md, and every ```python block, is run, in
    page order, in one session workspace. How a documented command becomes a test run:

    - The workspace (the commands' working directory) holds the names the docs use: `photos/`,
      `photos-val/` and `new-photos/` (generated images with the shared run's classes), `labels.csv`
      (`path,label` rows for photos/), `tasks.csv` (`path,species,color` rows for photos/), `photo.jpg`,
      `tulip1.jpg` ... `tulip3.jpg`, and `runs/flowers`: a copy of the session `run` fixture
      (tests/conftest.py), the one trained run all snippets share, with its tflite-none, tflite-int8 and
      onnx-int8 artifacts exported (the ones `compress` would build first; it reuses them).
      `edgetl-demo/run` is a link to it (the demo's run is made by CI setup, not here). `model.tflite`,
      `labels.txt` and `manifest.json` are runs/flowers/artifacts/tflite-none's files: the bare file of the
      bench examples and the folder getting-started copies to the Pi. ```toml blocks whose first line is
      `# file: NAME` are written as NAME.
    - `edgetl train`: `-o RUN` goes to a fresh folder instead (runs/flowers stays the well-trained shared
      run; a one-epoch model fails int8 verification); later mentions of that RUN (other than
      runs/flowers) lead to the fresh folder. Tiny settings are appended, relying on click keeping the last
      value of a repeated option: `--alpha 0.35 --image-size 32 --batch-size 8 --no-augment`, `--epochs 1`
      and `--fine-tune-epochs 1` where the command asks for more or leaves the default (hundreds of steps on
      tiny data). `--weights imagenet` (given or default)
      cannot download here: it becomes the shared run for mobilenet_v2 (the same architecture, the offline
      stand-in for pretrained weights), else `none`.
    - `edgetl compress`: `--threads 1` is appended, and the training steps of `--recipe` strings (prune,
      cluster, qat, and the aliases pqat, cqat) get `epochs=1`. `edgetl bench`: `--threads 1 --runs 2
      --min-time 0 --warmup 1 --throughput-batch 2` are appended.
    - Python blocks run after the page's commands, in order, in one fresh interpreter per page (as a user
      runs them), with the same rules applied to the syntax tree: `edgetl.train(DATA, RUN, ...)` writes
      RUN to a fresh folder with tiny keywords; `edgetl.compress` (with one-epoch recipes) and
      `BenchOptions(...)` get one thread and short timing.
    - Commands run in this process (`edgetl.cli.main`, the console script's function), so TensorFlow is
      imported once. A command already run in this session (same words) is not run again.
    - A command must exit 0, except `bench` with a gate, which may exit 1 saying the gate failed (its
      reports are written first). With `--json`, stdout must be one JSON document.
    - NOT_RUN lists the commands the test cannot run, each with its reason; they are still parsed by
      click, so a misspelt option or value fails.
(b) Every option and argument of every command (walking the click objects) is in a row of the table on
    docs/commands/<command>.md, with its default; every command has a page and every page a command.
(c) Every relative link in docs/ and README.md leads to an existing file and, with `#anchor`, heading.
(d) run-directory.md and report.md name every top-level key of a real manifest and report.
(e) python-api.md documents every top-level function and every keyword option they take.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import io
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from tests.conftest import class_image, write_image_folder

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
README = ROOT / "README.md"

SHARED_RUN = "runs/flowers"
TINY_TRAIN = ["--alpha", "0.35", "--image-size", "32", "--batch-size", "8", "--no-augment"]
FAST_BENCH = ["--threads", "1", "--runs", "2", "--min-time", "0", "--warmup", "1", "--throughput-batch", "2"]
FAST_COMPRESS = ["--threads", "1"]

# Commands the test does not run (exactly as written in the docs), and why. They are still parsed by click.
NOT_RUN = {
    "edgetl compress runs/flowers --target mcu --recipe int8 --recipe prune:sparsity=0.75+qat --json":
        "TFMOT's prune+QAT graph: ~45 s of CPU even at one epoch, a third of this test's budget; PQAT is "
        "tested in tests/test_compress.py (test_pqat_converts_to_full_int8_in_both_formats_and_keeps_its_zeros)",
    "edgetl demo": "runs in CI setup (README's ci:setup block runs `edgetl demo`); ~6 minutes on 2 cores",
    "edgetl demo -o /tmp/edgetl-demo --epochs 3 --json":
        "writes 1,797 images, trains and compresses 8 candidates: ~60 s, over this test's budget; "
        "`edgetl demo` runs in CI setup",
    "edgetl train photos/ -o runs/gpu --distribute mirrored --mixed-precision --batch-size 128":
        "--mixed-precision needs a GPU (exit 2 without one)",
    "edgetl train /shared/photos -o /shared/runs/flowers --distribute multi-worker --batch-size 256":
        "needs a cluster of machines described by TF_CONFIG",
}


# ----------------------------------------------------------------------------------------------- extraction

FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def _blocks(page: Path) -> list[tuple[str, str, int]]:
    """(language, body, line number) of every fenced block, in page order; indented fences are dedented."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        indent = len(match.group(1))
        body = "".join(line[indent:] if line[:indent].isspace() else line
                       for line in match.group(3).splitlines(keepends=True))
        found.append((match.group(2), body, text.count("\n", 0, match.start()) + 1))
    return found


def _shell_lines(body: str) -> list[str]:
    return [line.strip() for line in body.replace("\\\n", " ").splitlines() if line.strip()]


def _edgetl_argv(line: str) -> list[str] | None:
    """The arguments after `edgetl` if the line runs edgetl (after VAR=value prefixes), up to a shell operator."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[0]):
        tokens.pop(0)
    if not tokens or tokens[0] != "edgetl":
        return None
    cut = next((i for i, t in enumerate(tokens) if t and set(t) <= set("|&;<>()")), len(tokens))
    return tokens[1:cut]


def _steps(page: Path) -> list[tuple[str, Any, int]]:
    """What a page runs, in order: ("cli", (line, argv), lineno) and ("python", source, lineno)."""
    steps: list[tuple[str, Any, int]] = []
    for language, body, lineno in _blocks(page):
        if language == "sh":
            for line in _shell_lines(body):
                argv = _edgetl_argv(line)
                if argv is not None:
                    steps.append(("cli", (shlex.join(["edgetl", *argv]), argv), lineno))
        elif language == "python":
            steps.append(("python", body, lineno))
    return steps


def _file_blocks() -> dict[str, str]:
    files: dict[str, str] = {}
    for page in PAGES:
        for language, body, lineno in _blocks(page):
            first = body.splitlines()[0] if body else ""
            if language == "toml" and first.startswith("# file: "):
                name = first.removeprefix("# file: ").strip()
                assert files.get(name, body) == body, f"{page}:{lineno}: {name} is shown twice, differently"
                files[name] = body
    return files


RUNNABLE_PAGES = [p for p in [*PAGES, README] if _steps(p)]


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


# -------------------------------------------------------------------------------------- the shared workspace

@pytest.fixture(scope="session")
def workspace(run, tmp_path_factory):
    """The folder the documented commands run in (see the module docstring)."""
    from edgetl.exporting.exporter import export_run

    ws = tmp_path_factory.mktemp("docs-workspace")
    classes = (Path(run) / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert classes == [f"class_{i}" for i in range(len(classes))], "write_image_folder's class names"
    shared = ws / SHARED_RUN
    shutil.copytree(run, shared, ignore=shutil.ignore_patterns("artifacts", "bench", "compress"))
    for mode in ("none", "int8"):
        export_run(shared, format="tflite", quantize=mode)
    export_run(shared, format="onnx", quantize="int8")
    (ws / "edgetl-demo").mkdir()
    (ws / "edgetl-demo" / "run").symlink_to(shared, target_is_directory=True)
    write_image_folder(ws / "photos", classes=len(classes), per_class=12)
    write_image_folder(ws / "photos-val", classes=len(classes), per_class=4)
    write_image_folder(ws / "new-photos", classes=2, per_class=10)
    with open(ws / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        for image in sorted((ws / "photos").rglob("*.png")):
            writer.writerow([image.relative_to(ws).as_posix(), image.parent.name])
    with open(ws / "tasks.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "species", "color"])
        for image in sorted((ws / "photos").rglob("*.png")):
            warm = image.parent.name in ("class_0", "class_3")  # red and yellow (conftest.COLORS)
            writer.writerow([image.relative_to(ws).as_posix(), image.parent.name, "warm" if warm else "cool"])
    class_image(1, 3, size=120).convert("RGB").save(ws / "photo.jpg")
    for i in (1, 2, 3):
        class_image(3, i).convert("RGB").save(ws / f"tulip{i}.jpg")
    for name in ("model.tflite", "labels.txt", "manifest.json"):
        shutil.copyfile(shared / "artifacts" / "tflite-none" / name, ws / name)
    for name, body in _file_blocks().items():
        (ws / name).write_text(body, encoding="utf-8")
    return {"path": ws, "ran": {}, "fresh": 0, "made": {}}


@contextlib.contextmanager
def _in_directory(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _fresh(ws: dict[str, Any], name: str) -> str:
    """A new folder for a documented training output; later mentions of `name` lead there (not runs/flowers)."""
    ws["fresh"] += 1
    path = str(ws["path"] / "fresh" / str(ws["fresh"]) / Path(name).name)
    if name.rstrip("/") != SHARED_RUN:
        ws["made"][name.rstrip("/")] = path
    return path


def _made(ws: dict[str, Any], arg: str) -> str:
    """`arg`, or where the test put the documented training output it names (or a path inside it)."""
    for name, path in ws["made"].items():
        if arg.rstrip("/") == name or arg.startswith(name + "/"):
            return path + arg[len(name):]
    return arg


# ------------------------------------------------------------------------------------------- the CLI steps

def _command(name: str) -> click.Command:
    from edgetl.cli import cli

    command = cli.commands.get(name)
    assert command is not None, f"no command `edgetl {name}`"
    return command


def _parse(argv: list[str]) -> dict[str, Any]:
    """Click's parse of a documented command (unknown options and bad values raise); {} for group options."""
    if not argv or argv[0].startswith("-"):
        return {}
    command = _command(argv[0])
    with command.make_context(f"edgetl {argv[0]}", list(argv[1:])) as ctx:
        return dict(ctx.params)


def _test_argv(argv: list[str], params: dict[str, Any], ws: dict[str, Any]) -> list[str]:
    """The documented command with the test's substitutions (module docstring) appended."""
    name = argv[0] if argv else ""
    argv = [_made(ws, arg) for arg in argv]
    if name == "train":
        extra = ["-o", _fresh(ws, params["output"]), *TINY_TRAIN]
        if params["weights"] == "imagenet":
            extra += ["--weights", SHARED_RUN if params["backbone"] in (None, "mobilenet_v2") else "none"]
        for option in ("epochs", "fine_tune_epochs"):  # None: train's default (hundreds of steps on tiny data)
            if params[option] is None or params[option] > 1:
                extra += [f"--{option.replace('_', '-')}", "1"]
        return [*argv, *extra]
    if name == "compress":
        argv = [_tiny_recipe(arg) if previous in ("--recipe",) else arg
                for previous, arg in zip(["", *argv], argv)]
        return [*argv, *FAST_COMPRESS]
    if name == "bench":
        return [*argv, *FAST_BENCH]
    return list(argv)


def _tiny_recipe(spec: str) -> str:
    """A recipe string whose training steps run one epoch (a .toml recipe file is used as written)."""
    from edgetl.compression.recipe import TRAINING_STEPS

    if spec.endswith(".toml"):
        return spec
    steps = []
    for step in _expanded(spec):
        name, _, options = step.partition(":")
        if name in TRAINING_STEPS:
            kept = [o for o in options.split(",") if o and not o.strip().startswith("epochs=")]
            step = f"{name}:{','.join([*kept, 'epochs=1'])}"
        steps.append(step)
    return "+".join(steps) if steps != _expanded(spec) else spec


def _expanded(spec: str) -> list[str]:
    from edgetl.compression.recipe import ALIASES

    return "+".join(ALIASES.get(part.strip(), part.strip()) for part in spec.split("+")).split("+")


def _run_cli(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """`edgetl ARGV` in this process, through the console script's own function (its exit codes and messages)."""
    from edgetl.cli import main

    out, err, saved = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["edgetl", *argv]
    try:
        with _in_directory(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return code, out.getvalue(), err.getvalue()


def _check_cli(where: str, line: str, argv: list[str], ws: dict[str, Any]) -> None:
    try:
        params = _parse(argv)
    except click.ClickException as exc:
        pytest.fail(f"{where}: `{line}`: click refuses it: {exc.format_message()}")
    if line in NOT_RUN:
        return
    if line in ws["ran"]:
        return
    started = _clock()
    code, out, err = _run_cli(_test_argv(argv, params, ws), ws["path"])
    _log_time(where, line, started)
    gated = argv[0] == "bench" and (params.get("max_accuracy_drop") is not None
                                    or params.get("min_agreement") is not None)
    context = (f"{where}: `{line}` exited {code}\n--- stderr (end) ---\n{err[-4000:]}\n"
               f"--- stdout (end) ---\n{out[-2000:]}")
    if gated and code == 1:
        assert "failed the gate" in err, context
    else:
        assert code == 0, context
    if "--json" in argv:
        json.loads(out)  # one JSON document, nothing else on stdout
    ws["ran"][line] = code  # only a command that passed is not run again


# ---------------------------------------------------------------------------------------- the Python steps

def _literal(node: ast.expr | None, default: Any) -> Any:
    try:
        return default if node is None else ast.literal_eval(node)
    except ValueError:
        return default


class _TestSettings(ast.NodeTransformer):
    """The Python analogue of _test_argv: fresh outputs and tiny training, one thread and short timing."""

    def __init__(self, ws: dict[str, Any]) -> None:
        self.ws = ws

    @staticmethod
    def _set(node: ast.Call, **values: Any) -> None:
        node.keywords = [k for k in node.keywords if k.arg not in values]
        node.keywords += [ast.keyword(arg=k, value=ast.Constant(v) if not isinstance(v, tuple) else
                                      ast.Tuple([ast.Constant(x) for x in v], ast.Load())) for k, v in values.items()]

    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        return ast.Constant(_made(self.ws, node.value)) if isinstance(node.value, str) else node

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        func = ast.unparse(node.func)
        given = {k.arg: k.value for k in node.keywords}
        if func == "edgetl.train":
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                node.args[1] = ast.Constant(_fresh(self.ws, node.args[1].value))
            tiny: dict[str, Any] = {"alpha": 0.35, "image_size": 32, "batch_size": 8, "augment": False}
            if _literal(given.get("weights"), "imagenet") == "imagenet":
                backbone = _literal(given.get("backbone"), "mobilenet_v2")
                tiny["weights"] = SHARED_RUN if backbone == "mobilenet_v2" else "none"
            if _literal(given.get("epochs"), 5) > 1:
                tiny["epochs"] = 1
            if _literal(given.get("fine_tune_epochs"), 0) > 1:
                tiny["fine_tune_epochs"] = 1
            self._set(node, **tiny)
        elif func == "edgetl.compress":
            recipes = _literal(given.get("recipes"), ())
            recipes = (recipes,) if isinstance(recipes, str) else tuple(recipes)
            self._set(node, threads=(1,), min_runs=2, min_seconds=0.0)
            if recipes:
                self._set(node, recipes=tuple(_tiny_recipe(r) for r in recipes))
        elif func.endswith("BenchOptions"):
            self._set(node, threads=(1,), min_runs=2, min_seconds=0.0, warmup=1, throughput_batch=2)
        return node


RUNNER = """
import json, sys, time, traceback
namespace = {"__name__": "__docs__"}
for where, source in json.load(sys.stdin):
    started = time.perf_counter()
    try:
        exec(compile(source, where, "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"DOCS-SNIPPET-FAILED {where}", file=sys.stderr)
        sys.exit(1)
    print(f"DOCS-BLOCK-TIME {time.perf_counter() - started:.1f} {where}", file=sys.stderr)
"""


def _run_python(page: str, blocks: list[tuple[str, str]], ws: dict[str, Any]) -> None:
    """A page's Python blocks, rewritten (_TestSettings), in order, in one fresh interpreter: as a user runs them
    (this process has imported edgetl's modules for the CLI steps, which a user's session would not have)."""
    import subprocess

    sources = [(where, ast.unparse(ast.fix_missing_locations(_TestSettings(ws).visit(ast.parse(source)))))
               for where, source in blocks]
    started = _clock()
    done = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(sources), capture_output=True, text=True,
                          cwd=ws["path"], env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900)
    _log_time(page, f"{len(blocks)} python block(s)", started)
    for line in done.stderr.splitlines():
        if line.startswith("DOCS-BLOCK-TIME ") and os.environ.get("EDGETL_DOCS_TIMING"):
            with open(os.environ["EDGETL_DOCS_TIMING"], "a", encoding="utf-8") as fh:
                fh.write(f"    {line.split()[1]:>5} s wall (block)  {line.split()[2]}\n")
    assert done.returncode == 0, f"{page}: a Python block failed\n{done.stderr[-6000:]}"


def _clock() -> tuple[float, float]:
    import resource
    import time

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), time.process_time() + children.ru_utime + children.ru_stime


def _log_time(where: str, what: str, started: tuple[float, float]) -> None:
    """With EDGETL_DOCS_TIMING=FILE, one line per step: wall and CPU seconds (for sizing the CI budget)."""
    target = os.environ.get("EDGETL_DOCS_TIMING")
    if target:
        wall, cpu = (now - then for now, then in zip(_clock(), started))
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(f"{wall:7.1f} s wall {cpu:7.1f} s cpu  {where}  {what}\n")


# -------------------------------------------------------------------------------------------------- (a)

@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=_page_id)
def test_every_documented_command_and_snippet_runs(page: Path, workspace: dict[str, Any], monkeypatch):
    monkeypatch.setenv("EDGETL_CACHE", str(workspace["path"] / "cache"))
    python_blocks: list[tuple[str, str]] = []
    for kind, step, lineno in _steps(page):
        where = f"{_page_id(page)}:{lineno}"
        if kind == "cli":
            line, argv = step
            _check_cli(where, line, argv, workspace)
        else:
            python_blocks.append((where, step))
    if python_blocks:  # after the page's commands (no page interleaves them: pages_keep_python_after_commands)
        _run_python(_page_id(page), python_blocks, workspace)


def test_pages_keep_python_after_commands():
    """Python blocks run after a page's commands (in a fresh interpreter), so a page must not need a command
    to follow one of its Python blocks."""
    for page in RUNNABLE_PAGES:
        kinds = [kind for kind, _, _ in _steps(page)]
        assert "cli" not in kinds[kinds.index("python"):] if "python" in kinds else True, (
            f"{_page_id(page)}: an `edgetl` command follows a Python block; move it before")


def test_the_not_run_list_is_short_and_current():
    documented = {step[0] for page in [*PAGES, README] for kind, step, _ in _steps(page) if kind == "cli"}
    assert set(NOT_RUN) <= documented, f"NOT_RUN names commands no page shows: {set(NOT_RUN) - documented}"
    assert len(NOT_RUN) <= 8, "keep the list of commands the docs test cannot run short"


def test_the_substitution_keeps_the_shared_run_and_makes_training_tiny(workspace):
    """The rules the documented commands run under do what the module docstring says."""
    argv = ["train", "photos/", "-o", SHARED_RUN, "--epochs", "5", "--fine-tune-epochs", "5"]
    params = _parse(_test_argv(argv, _parse(argv), workspace))
    assert Path(params["output"]).parent.parent == workspace["path"] / "fresh"
    assert (params["weights"], params["alpha"], params["image_size"]) == (SHARED_RUN, 0.35, 32)
    assert (params["epochs"], params["fine_tune_epochs"], params["augment"]) == (1, 1, False)
    scratch = ["train", "photos/", "-o", "runs/x", "--backbone", "mobilenet_v3_small", "--epochs", "0",
               "--fine-tune-epochs", "1"]
    params = _parse(_test_argv(scratch, _parse(scratch), workspace))
    assert (params["weights"], params["epochs"], params["fine_tune_epochs"]) == ("none", 0, 1)
    assert _parse(_test_argv(["bench", "x.tflite"], {}, workspace))["min_runs"] == 2


# -------------------------------------------------------------------------------------------------- (b)

def _commands() -> dict[str, click.Command]:
    from edgetl.cli import cli

    return dict(cli.commands)


def _flag_pattern(flag: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(flag)}(?![\w-])")


def _default_text(option: click.Option) -> str | None:
    """How an option's default must appear in its row; None when there is nothing to show (a flag, no default)."""
    default = option.default
    if option.is_flag or option.count or option.required:
        return None
    if option.multiple and isinstance(default, (list, tuple)):
        return ", ".join(str(v) for v in default) or None
    return str(default) if isinstance(default, (str, int, float)) else None  # None or click's unset sentinel


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_option_of_every_command_is_documented_on_its_page(name: str):
    page = DOCS / "commands" / f"{name}.md"
    assert page.is_file(), f"`edgetl {name}` has no page: write {page.relative_to(ROOT)}"
    # Table rows as cells; a row documents what its first cell names, its second cell is the default.
    rows = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            for line in page.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    missing, wrong_default = [], []
    for param in _commands()[name].params:
        if isinstance(param, click.Argument):
            if not any(row and param.human_readable_name in row[0] for row in rows):
                missing.append(param.human_readable_name)
            continue
        if param.name == "help":
            continue
        flags = [*param.opts, *param.secondary_opts]
        row = next((r for r in rows if r and all(_flag_pattern(flag).search(r[0]) for flag in flags)), None)
        if row is None:
            missing.append(" / ".join(flags))
            continue
        default = _default_text(param)
        if default is not None and (len(row) < 2 or default not in row[1]):
            wrong_default.append(f"{' / '.join(flags)} (default {default!r})")
    assert not missing and not wrong_default, (
        f"{page.relative_to(ROOT)}: no table row for: {', '.join(missing) or '-'}; "
        f"the row does not show the default of: {', '.join(wrong_default) or '-'}")


def test_every_command_page_is_a_command_and_listed_in_the_index():
    pages = {p.stem for p in (DOCS / "commands").glob("*.md")}
    assert pages == set(_commands()), f"pages without a command: {pages - set(_commands())}"
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for name in _commands():
        assert f"(commands/{name}.md)" in index, f"docs/README.md does not link `edgetl {name}`"


# -------------------------------------------------------------------------------------------------- (c)

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.MULTILINE):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", [*PAGES, README], ids=_page_id)
def test_links_between_pages_resolve(page: Path):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{_page_id(page)}: broken links: {', '.join(broken)}"


def test_the_readme_links_the_documentation():
    text = README.read_text(encoding="utf-8")
    assert "## Documentation" in text
    for page in ("docs/getting-started.md", "docs/README.md", "docs/python-api.md", "docs/troubleshooting.md"):
        assert f"({page}" in text, f"README.md does not link {page}"


# -------------------------------------------------------------------------------------------------- (d)

def _documented_keys(page: str, keys: set[str]) -> list[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return sorted(k for k in keys if f"`{k}`" not in text)


def test_run_directory_page_names_every_manifest_key(workspace):
    shared = workspace["path"] / SHARED_RUN
    run_doc = json.loads((shared / "manifest.json").read_text())
    artifact_doc = json.loads((shared / "artifacts" / "tflite-int8" / "manifest.json").read_text())
    keys = set(run_doc) | set(artifact_doc) | set(run_doc["metrics"]) | set(run_doc["dataset"])
    keys |= set(run_doc["backbone"]) | set(artifact_doc["options"]) | set(artifact_doc["metrics"])
    keys |= set(artifact_doc["artifact"]) | set(artifact_doc["verification"])
    missing = _documented_keys("run-directory.md", keys)
    assert not missing, f"docs/run-directory.md does not name these manifest keys: {missing}"
    # A run's options are the train options under their Python names, documented on the command's page.
    train_page = (DOCS / "commands" / "train.md").read_text(encoding="utf-8")
    undocumented = [k for k in run_doc["options"] if f"--{k.replace('_', '-')}" not in train_page
                    and f"`{k}`" not in (DOCS / "run-directory.md").read_text(encoding="utf-8")]
    assert not undocumented, f"run options neither train.md nor run-directory.md names: {undocumented}"


def test_report_page_names_every_report_key(workspace):
    argv = ["compress", SHARED_RUN, "--target", "arm64-cpu", "--max-accuracy-drop", "0.5"]
    line = "edgetl " + " ".join(argv)
    _check_cli("test_report_page_names_every_report_key", line, argv, workspace)
    report = json.loads((workspace["path"] / SHARED_RUN / "compress" / "report.json").read_text())
    artifact = next(a for a in report["artifacts"] if not a["skipped"])
    keys = set(report) | set(report["settings"]) | set(report["compress"]) | set(artifact) | set(artifact["parity"])
    keys |= set(artifact["latency"][0]) | set(artifact["peak_ram_estimate"]) | set(report["machine"])
    keys -= {"schema", "schema_version"}  # shown with their values
    missing = _documented_keys("report.md", keys)
    assert not missing, f"docs/report.md does not name these report keys: {missing}"


# -------------------------------------------------------------------------------------------------- (e)

def test_python_api_page_documents_every_function_and_keyword():
    import dataclasses

    import edgetl
    from edgetl.bundling.bundler import BundleOptions
    from edgetl.compression.compressor import CompressOptions
    from edgetl.runner.bench import BenchOptions
    from edgetl.training.config import TrainConfig

    text = (DOCS / "python-api.md").read_text(encoding="utf-8")
    missing = [f"edgetl.{name}" for name in edgetl.__all__ if name != "__version__" and f"`edgetl.{name}(" not in text]
    for options, skip in ((TrainConfig, {"data", "output"}), (CompressOptions, set()), (BundleOptions, set()),
                          (BenchOptions, set())):
        missing += [f"{options.__name__}.{f.name}" for f in dataclasses.fields(options)
                    if f.name not in skip and f"`{f.name}`" not in text and f"`{f.name}=" not in text]
    assert not missing, f"docs/python-api.md does not document: {', '.join(missing)}"
