"""Recipe strings and files: parsing, validation (every problem at once), and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetl.compression.recipe import STEP_OPTIONS, STEP_ORDER, load_file, parse
from edgetl.errors import UsageError


@pytest.mark.parametrize("text, steps, quantize", [
    ("int8", ["ptq"], "int8"), ("float", ["ptq"], "none"), ("fp16", ["ptq"], "fp16"),
    ("prune", ["prune"], "none"), ("cluster:clusters=8", ["cluster"], "none"),
    ("qat", ["qat"], "int8"), ("pqat", ["prune", "qat"], "int8"), ("cqat", ["cluster", "qat"], "int8"),
    ("prune:sparsity=0.75+int8", ["prune", "ptq"], "int8"), ("prune+cluster+dynamic", ["prune", "cluster", "ptq"], "dynamic"),
])
def test_recipe_steps_and_export_mode(text, steps, quantize):
    recipe = parse(text)
    assert [s.name for s in recipe.steps] == steps
    assert recipe.quantize == quantize


def test_options_are_typed_and_defaults_filled():
    recipe = parse("prune:sparsity=0.75,structure=block+ptq:per_channel=false,calibration=500,fallback=a|b")
    prune, ptq = recipe.steps
    assert prune.get("sparsity") == 0.75 and prune.get("epochs") == 8 and prune.get("learning_rate") is None
    assert ptq.get("per_channel") is False and ptq.get("calibration") == 500 and ptq.get("fallback") == ("a", "b")


def test_every_problem_is_reported_at_once():
    with pytest.raises(UsageError) as caught:
        parse("qat+prune:sparsity=1.5,colour=red+ptq:mode=fp16+magic")
    message = str(caught.value)
    for fragment in ("unknown step 'magic'", "unknown option 'colour'", "sparsity must be between 0 and 1",
                     "must run in the order", "cannot be followed by ptq:mode=fp16"):
        assert fragment in message


@pytest.mark.parametrize("text, fragment", [
    ("prune:sparsity=half", "is not a number"), ("cluster:clusters=2.5", "is not an integer"),
    ("ptq:per_channel=maybe", "is not true or false"), ("prune+prune", "appears 2 times"),
    ("prune:structure=2:4,sparsity=0.75", "exactly 50 %"), ("prune:block=4", "must look like 1x4"),
    ("ptq:mode=fp16,per_channel=false", "apply to mode=int8 only"), ("qat:epochs=0", "epochs must be >= 1"),
    ("prune:sparsity", "is not key=value"), ("", "unknown step ''"),
])
def test_bad_recipes_name_the_problem(text, fragment):
    with pytest.raises(UsageError, match="--recipe") as caught:
        parse(text)
    assert fragment in str(caught.value)


def test_toml_recipe_file(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[[step]]\nname = "prune"\nsparsity = 0.8\n\n[[step]]\nname = "qat"\nepochs = 3\n')
    recipe = parse(str(path))
    assert recipe.spec() == "prune:sparsity=0.8+qat:epochs=3"
    path.write_text('[[step]]\nname = "prune"\nsparsity = "high"\nsize = 3\n')
    with pytest.raises(UsageError) as caught:
        load_file(path)
    assert "sparsity='high' is not a number" in str(caught.value) and "unknown option 'size'" in str(caught.value)
    path.write_text("steps = 1")
    with pytest.raises(UsageError, match="unknown top-level key 'steps'"):
        load_file(path)
    with pytest.raises(UsageError, match="no such file"):
        parse(str(tmp_path / "missing.toml"))


def _values(kind: str, name: str, key: str) -> st.SearchStrategy:
    valid = {("prune", "sparsity"): st.sampled_from([0.25, 0.5, 0.8]), ("prune", "structure"): st.just("none"),
             ("prune", "block"): st.sampled_from(["1x4", "2x2"]), ("ptq", "mode"): st.just("int8"),
             ("cluster", "clusters"): st.integers(2, 256)}
    if (name, key) in valid:
        return valid[(name, key)]
    return {"float": st.sampled_from([1e-4, 0.001, 0.5]), "int": st.integers(1, 1000), "bool": st.booleans(),
            "str": st.just("x"), "list": st.lists(st.sampled_from(["conv", "head", "block_1"]), max_size=3)
            .map(tuple)}[kind]


@st.composite
def recipe_specs(draw: st.DrawFn) -> str:
    names = draw(st.lists(st.sampled_from(STEP_ORDER), min_size=1, max_size=4, unique=True))
    parts = []
    for name in sorted(names, key=STEP_ORDER.index):
        keys = draw(st.lists(st.sampled_from(sorted(STEP_OPTIONS[name])), unique=True, max_size=3))
        options = []
        for key in keys:
            value = draw(_values(STEP_OPTIONS[name][key][0], name, key))
            text = "|".join(value) if isinstance(value, tuple) else str(value).lower() if isinstance(value, bool) else str(value)
            if text:
                options.append(f"{key}={text}")
        parts.append(name + (":" + ",".join(options) if options else ""))
    return "+".join(parts)


@settings(max_examples=200, deadline=None)
@given(recipe_specs())
def test_spec_and_canonical_round_trip(text):
    recipe = parse(text)
    assert parse(recipe.spec()) == recipe
    assert parse(recipe.canonical()) == recipe
    assert "/" not in recipe.slug() and len(recipe.slug()) < 120


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="prunecluserqatint8:=,+|.0123456789 xy", max_size=40))
def test_any_text_parses_or_raises_a_usage_error(text):
    try:
        parse(text)
    except UsageError as exc:
        assert str(exc).startswith("--recipe")
