"""Listing, labelling and splitting datasets (no TensorFlow involved)."""

from __future__ import annotations

import collections
import csv
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetl.data import dataset_index as dsi
from edgetl.errors import InputError, UsageError
from tests.conftest import write_image_folder


def test_folder_classes_are_sorted_subfolders_and_labels_follow(tmp_path):
    write_image_folder(tmp_path, classes=3, per_class=4)
    index = dsi.index_folder(tmp_path)
    assert index.classes == ("class_0", "class_1", "class_2")
    assert index.counts() == {"class_0": 4, "class_1": 4, "class_2": 4}
    for path, label in zip(index.paths, index.labels):
        assert Path(path).parent.name == index.classes[label]


def test_folder_skips_hidden_and_non_image_files_and_reads_nested_folders(tmp_path):
    write_image_folder(tmp_path, classes=2, per_class=2)
    (tmp_path / "class_0" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "class_0" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden_class").mkdir()
    nested = tmp_path / "class_1" / "more"
    nested.mkdir()
    (tmp_path / "class_1" / "img_000.png").rename(nested / "deep.PNG")
    index = dsi.index_folder(tmp_path)
    assert index.classes == ("class_0", "class_1")
    assert sorted(Path(p).name for p in index.paths) == ["deep.PNG", "img_000.png", "img_001.png", "img_001.png"]


def test_symlink_loop_does_not_hang(tmp_path):
    write_image_folder(tmp_path, classes=2, per_class=2)
    (tmp_path / "class_0" / "loop").symlink_to(tmp_path / "class_0", target_is_directory=True)
    assert dsi.index_folder(tmp_path).counts() == {"class_0": 2, "class_1": 2}


def test_csv_with_and_without_header_resolves_relative_paths(tmp_path):
    write_image_folder(tmp_path / "imgs", classes=2, per_class=2)
    rows = ["imgs/class_0/img_000.png,cat", "imgs/class_0/img_001.png,cat",
            "imgs/class_1/img_000.png,dog", f"{tmp_path}/imgs/class_1/img_001.png,dog"]
    for header in ("path,label\n", ""):
        csv_path = tmp_path / "data.csv"
        csv_path.write_text(header + "\n".join(rows) + "\n")
        index = dsi.index_data(csv_path)
        assert index.format == "csv" and index.classes == ("cat", "dog")
        assert index.counts() == {"cat": 2, "dog": 2}
        assert all(Path(p).is_file() for p in index.paths)


@pytest.mark.parametrize("content, message", [
    ("", "no rows"),
    ("path,label\n", "no rows"),
    ("a.png\n", "line 1"),
    ("a.png,\n", "line 1"),
    ("path,label\n\na.png,x\nb.png\n", "line 4"),
    ('"two\nlines.png",x\nb.png\n', "line 3"),
    ('a.png,"multi\nline label"\n', "line break"),
    ("a.png\0,x\n", "NUL"),
])
def test_malformed_csv_names_the_file_and_line(tmp_path, content, message):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        dsi.index_data(csv_path)
    assert str(csv_path) in str(info.value)


def test_missing_data_and_wrong_file_type_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        dsi.index_data(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="one sub-folder per class"):
        dsi.index_data(tmp_path / "x.txt")


def test_empty_dataset_and_empty_class_folder_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no class sub-folders"):
        dsi.index_folder(tmp_path)
    write_image_folder(tmp_path, classes=2, per_class=2)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(InputError, match="without images: empty_class"):
        dsi.index_folder(tmp_path)


def test_single_class_is_rejected(tmp_path):
    write_image_folder(tmp_path, classes=1, per_class=3)
    with pytest.raises(InputError, match="only one class"):
        dsi.check_trainable(dsi.index_folder(tmp_path))


def test_val_dir_with_unknown_class_is_rejected(tmp_path):
    write_image_folder(tmp_path / "train", classes=2, per_class=2)
    write_image_folder(tmp_path / "val", classes=3, per_class=1)
    train = dsi.index_folder(tmp_path / "train")
    with pytest.raises(InputError, match="not in the training data: class_2"):
        dsi.index_folder(tmp_path / "val", classes=train.classes)


def test_val_dir_labels_follow_training_class_numbering(tmp_path):
    write_image_folder(tmp_path / "val", classes=2, per_class=1)
    (tmp_path / "val" / "class_0").rename(tmp_path / "val" / "zebra")
    val = dsi.index_folder(tmp_path / "val", classes=("class_1", "zebra"))
    assert {Path(p).parent.name: label for p, label in zip(val.paths, val.labels)} == {"class_1": 0, "zebra": 1}


def _fake_index(counts: dict[str, int]) -> dsi.DatasetIndex:
    classes = tuple(sorted(counts))
    paths, labels = [], []
    for label, name in enumerate(classes):
        paths += [f"/d/{name}/{i:04d}.png" for i in range(counts[name])]
        labels += [label] * counts[name]
    return dsi.DatasetIndex("/d", "folder", classes, tuple(paths), tuple(labels))


def test_split_is_stratified_deterministic_and_disjoint():
    index = _fake_index({"a": 50, "b": 20, "c": 7, "solo": 1})
    train, val = dsi.stratified_split(index, 0.2, seed=3)
    again_train, again_val = dsi.stratified_split(index, 0.2, seed=3)
    assert (train.paths, val.paths) == (again_train.paths, again_val.paths)
    assert not set(train.paths) & set(val.paths)
    assert set(train.paths) | set(val.paths) == set(index.paths)
    assert val.counts() == {"a": 10, "b": 4, "c": 1, "solo": 0}
    other_train, other_val = dsi.stratified_split(index, 0.2, seed=4)
    assert set(other_val.paths) != set(val.paths)
    assert other_val.counts() == val.counts()


def test_split_does_not_depend_on_listing_order():
    index = _fake_index({"a": 30, "b": 30})
    order = list(reversed(range(len(index.paths))))
    shuffled = dsi.DatasetIndex("/d", "folder", index.classes, tuple(index.paths[i] for i in order),
                                tuple(index.labels[i] for i in order))
    assert set(dsi.stratified_split(index, 0.3, 0)[1].paths) == set(dsi.stratified_split(shuffled, 0.3, 0)[1].paths)


def test_without_records_skipped_files_and_reasons():
    index = _fake_index({"a": 3, "b": 3})
    cleaned = index.without({"/d/a/0001.png": "cannot decode"})
    assert len(cleaned.paths) == 5 and "/d/a/0001.png" not in cleaned.paths
    assert cleaned.summary()["skipped"] == [{"path": "/d/a/0001.png", "reason": "cannot decode"}]
    assert collections.Counter(cleaned.labels) == {0: 2, 1: 3}


# Cells built mostly from pieces that matter to CSV, paths and labels, plus any other unicode character.
_cell = st.lists(st.sampled_from([",", '"', "'", "\n", "\r", "\t", " ", "/", "\\", ".", "..", "\0", "~", "a",
                                  "é", "猫", "\u2028", "\x85"])
                 | st.characters(blacklist_categories=("Cs",)),  # a CSV file is UTF-8: no lone surrogates
                 max_size=8).map("".join)
_csv_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check_index_or_clean_error(csv_path: Path) -> None:
    try:
        index = dsi.index_csv(csv_path)
    except (InputError, UsageError) as exc:
        assert str(exc).startswith(str(csv_path)) and "\n" not in str(exc)
        return
    assert index.paths and len(index.paths) == len(index.labels)
    assert list(index.classes) == sorted(set(index.classes))
    assert set(index.labels) <= set(range(len(index.classes)))
    root = str(csv_path.parent.resolve())
    assert all(Path(p).resolve().is_relative_to(root) for p in index.paths)
    assert all(name.splitlines() == [name] and "\0" not in name for name in index.classes)


@_csv_settings
@given(rows=st.lists(st.lists(_cell, max_size=4), max_size=6),
       quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
def test_any_csv_rows_give_a_valid_index_or_a_clean_error(tmp_path, rows, quoting):
    csv_path = tmp_path / "data.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, quoting=quoting).writerows(rows)
    _check_index_or_clean_error(csv_path)


@_csv_settings
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_csv_bytes_give_a_valid_index_or_a_clean_error(tmp_path, content):
    csv_path = tmp_path / "data.csv"
    csv_path.write_bytes(content)
    _check_index_or_clean_error(csv_path)
