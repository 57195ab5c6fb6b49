"""Bad inputs (issue #8): each case is handled or refused with a clear message, never a traceback,
and whatever was left out is listed with its reason in the run's manifest.

One dataset folder holds every bad case next to enough good images, so one `edgetl train` covers them all.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from edgetl.data import dataset_index as dsi
from edgetl.data.pipeline import MAX_IMAGE_PIXELS, header_problem
from edgetl.errors import InputError, UsageError
from tests.conftest import TINY, class_image, run_cli, write_image_folder

NON_UTF8 = os.fsdecode(b"caf\xe9 photo.png")  # Latin-1 bytes: not valid UTF-8


def _tiny_args() -> list[str]:
    return [arg for key, value in TINY.items() if key != "augment"
            for arg in (f"--{key.replace('_', '-')}", str(value))] + ["--no-augment"]


def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A real 1-bit PNG of width x height black pixels: tiny on disk, gigabytes once decoded to RGB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


def _exif_jpeg(path: Path, image: Image.Image, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, quality=100, exif=exif.tobytes())
    return path


def _halves() -> Image.Image:
    """40 wide, 20 tall: left half red, right half blue."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    return Image.fromarray(pixels)


def _write_bad_cases(folder: Path) -> None:
    good = class_image(0, 99, size=40)
    encoded = io.BytesIO()
    good.save(encoded, "JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(encoded.getvalue()[:300])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a jpeg")
    _bomb_png(folder / "bomb.png", 20000, 20000)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "._foo.jpg").write_bytes(b"\0\5\26\7 AppleDouble")  # macOS resource fork: not a JPEG
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    # Readable, in unusual shapes: all of these must be kept.
    good.convert("RGBA").save(folder / "alpha.png")
    Image.fromarray((np.asarray(good.convert("L"), np.uint16) * 257)).save(folder / "sixteen.png")
    good.convert("L").save(folder / "gray.png")
    good.convert("CMYK").save(folder / "cmyk.jpg")
    good.convert("P").save(folder / "palette.gif")
    _exif_jpeg(folder / "rotated.jpg", good.resize((40, 20)), 6)
    good.save(folder / "with space.png")
    good.save(folder / NON_UTF8)
    (folder / "nested" / "deeper").mkdir(parents=True)
    good.save(folder / "nested" / "deeper" / "inner.png")


KEPT = ["alpha.png", "sixteen.png", "gray.png", "cmyk.jpg", "palette.gif", "rotated.jpg", "with space.png",
        NON_UTF8, "inner.png"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three classes: 'cats' (18 good images plus every bad case), 'dogs' (6), 'solo' (1: extreme imbalance)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    data = write_image_folder(root / "data", classes=2, per_class=18)
    (data / "class_0").rename(data / "cats")
    (data / "class_1").rename(data / "dogs")
    for extra in sorted((data / "dogs").iterdir())[6:]:
        extra.unlink()
    (data / "solo").mkdir()
    class_image(2, 0).save(data / "solo" / "only.png")
    _write_bad_cases(data / "cats")
    result = run_cli("train", str(data), "-o", str(root / "run"), *_tiny_args(), "--class-weights", "balanced",
                     "--json")
    return data, root / "run", result


def test_one_run_over_every_bad_case_succeeds_without_a_traceback(corpus):
    _, run, result = corpus
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout)["kind"] == "run"
    # edgetl.log: TensorFlow's own lines, kept out of the terminal (edgetl.console)
    assert sorted(p.name for p in run.iterdir()) == ["edgetl.log", "labels.txt", "manifest.json", "model.keras"]


def test_manifest_lists_every_skipped_file_with_its_reason(corpus):
    data, run, _ = corpus
    skipped = json.loads((run / "manifest.json").read_text())["dataset"]["skipped"]
    reasons = {os.path.relpath(entry["path"], data / "cats"): entry["reason"] for entry in skipped}
    assert sorted(reasons) == ["bomb.png", "loop", "notes.txt", "text.jpg", "truncated.jpg", "zero.jpg"]
    assert reasons["truncated.jpg"].startswith("cannot decode: ") and "{{" not in reasons["truncated.jpg"]
    assert reasons["text.jpg"].startswith("cannot decode: Unknown image file format")
    assert reasons["zero.jpg"] == "empty file"
    assert reasons["bomb.png"].startswith("image too large: header claims 400,000,000 pixels")
    assert reasons["bomb.png"].endswith("not decoded")
    assert reasons["loop"] == "symbolic link to a folder: not followed"
    assert reasons["notes.txt"].startswith("not an image file name")


def test_bench_data_with_bad_images_skips_and_lists_them_as_training_did(corpus, tmp_path):
    """`edgetl bench --data` runs training's image check: every bad file is skipped with the same reason,
    on stderr and in report.json, and the readable ones are evaluated."""
    data, run, _ = corpus
    exported = run_cli("export", str(run), "--format", "tflite", "-o", str(tmp_path / "artifact"))
    assert exported.returncode == 0, exported.stderr[-3000:]
    result = run_cli("bench", str(tmp_path / "artifact"), "--data", str(data), "--threads", "1", "--runs", "3",
                     "--warmup", "0", "--min-time", "0", "--throughput-batch", "1", "-o", str(tmp_path / "report"))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    trained = {e["path"]: e["reason"] for e in json.loads((run / "manifest.json").read_text())["dataset"]["skipped"]}
    for path, reason in trained.items():
        assert f"skipped {path}: {reason}\n" in result.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {s["path"]: s["reason"] for s in report["settings"]["skipped"]} == trained
    kept = len(dsi.index_folder(data).paths) - len([p for p in trained if not p.endswith(("loop", ".txt"))])
    assert report["settings"]["images"] == report["artifacts"][0]["parity"]["images"] == kept
    assert "**Skipped images:** 6: " in (tmp_path / "report" / "report.md").read_text()


def test_unusual_but_readable_images_hidden_files_and_nested_folders(corpus):
    data, run, result = corpus
    dataset = json.loads((run / "manifest.json").read_text())["dataset"]
    # 18 generated + the 9 readable oddities (nested/deeper/inner.png is read recursively); hidden files are not
    # images and are neither counted nor listed.
    assert dataset["class_counts"] == {"cats": 18 + len(KEPT), "dogs": 6, "solo": 1}
    assert not [e for e in dataset["skipped"] if "DS_Store" in e["path"] or "._foo" in e["path"]]
    for name in ("skipped", "bomb.png: image too large", "loop: symbolic link to a folder"):
        assert name in result.stderr


def test_class_imbalance_warns_with_counts_and_balanced_weights_reach_training(corpus):
    _, run, result = corpus
    doc = json.loads((run / "manifest.json").read_text())
    warning = next(line for line in result.stderr.splitlines() if "imbalanced classes" in line)
    assert "solo: 1" in warning and "cats: " in warning
    weights = doc["dataset"]["class_weights"]
    counts = doc["dataset"]["train_counts"]
    assert doc["options"]["class_weights"] == "balanced"
    assert weights["solo"] == pytest.approx(sum(counts.values()) / (3 * counts["solo"]), rel=1e-3)
    assert weights["solo"] > weights["dogs"] > weights["cats"]
    # The one-image class trains and has nothing to validate on: shown as n/a, not a crash.
    assert doc["dataset"]["val_counts"]["solo"] == 0 and doc["metrics"]["per_class_accuracy"]["solo"] is None


def test_imbalance_warning_suggests_class_weights_when_not_given(tmp_path, capsys):
    from edgetl.training.trainer import _class_weights

    counts = {"a": 40, "b": 2}
    index = dsi.DatasetIndex("/d", "folder", ("a", "b"), tuple(f"/d/{i}" for i in range(42)), (0,) * 40 + (1,) * 2)
    assert index.counts() == counts
    assert _class_weights(index, "none") is None
    assert "(training images a: 40, b: 2); consider --class-weights balanced" in capsys.readouterr().err
    assert _class_weights(index, "balanced") == {0: 0.525, 1: 10.5}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_photo_viewers_do(tmp_path, orientation):
    from edgetl.data.pipeline import decode_file

    path = _exif_jpeg(tmp_path / "photo.jpg", _halves(), orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"), np.float32)
    decoded = decode_file(str(path)).astype(np.float32)
    assert decoded.shape == expected.shape
    assert np.abs(decoded - expected).mean() < 3  # libjpeg vs Pillow upsampling differ slightly at edges


def test_orientation_6_turns_a_wide_photo_upright_in_the_training_pipeline(tmp_path):
    from edgetl.backbones.spec import MINUS_ONE_TO_ONE
    from edgetl.data.pipeline import decode_file, make_dataset

    path = _exif_jpeg(tmp_path / "sideways.jpg", _halves(), 6)  # stored 40x20, shown rotated 90° clockwise
    upright = decode_file(str(path))
    assert upright.shape == (40, 20, 3)
    assert upright[5, 10, 0] > 200 and upright[5, 10, 2] < 50  # top half red (was the left half)
    assert upright[35, 10, 2] > 200 and upright[35, 10, 0] < 50  # bottom half blue
    images, _ = next(iter(make_dataset([str(path)], [0], image_size=32, batch_size=1,
                                       preprocessing=MINUS_ONE_TO_ONE, training=False)))
    pixels = images.numpy()[0] * 127.5 + 127.5
    assert pixels[4, 16, 0] > 200 and pixels[28, 16, 2] > 200


def test_decompression_bomb_is_refused_from_its_header_without_decoding(tmp_path):
    bomb = _bomb_png(tmp_path / "bomb.png", 20000, 20000)
    assert bomb.stat().st_size < 200_000
    # A fresh interpreter: if anything decoded the file, TensorFlow would have been imported to do it.
    code = ("import sys; from edgetl.data.pipeline import find_unreadable; "
            f"print(find_unreadable([{str(bomb)!r}])[{str(bomb)!r}]); print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    reason, tf_loaded = out.stdout.splitlines()
    assert reason.startswith("image too large") and f"{MAX_IMAGE_PIXELS:,}-pixel limit" in reason
    assert tf_loaded == "False"


def test_header_just_over_the_pixel_limit_names_its_size(tmp_path):
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 1  # under Pillow's hard limit: Pillow only warns, edgetl refuses
    big = _bomb_png(tmp_path / "big.png", side, side)
    with pytest.warns(Image.DecompressionBombWarning):
        problem = header_problem(str(big))
    assert problem and f"{side}x{side} = {side * side:,} pixels" in problem
    assert header_problem(str(write_image_folder(tmp_path / "ok", 1, 1) / "class_0" / "img_000.png")) is None


def _quick_cli_failure(*args: str) -> subprocess.CompletedProcess:
    result = run_cli("train", *_tiny_args(), *args)  # later options win: args may override TINY
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return result


def test_empty_class_folder_is_refused_with_exit_2_naming_it(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=2, per_class=3)
    (data / "empty_one").mkdir()
    (data / "empty_one" / ".DS_Store").write_bytes(b"x")
    result = _quick_cli_failure(str(data), "-o", str(tmp_path / "run"))
    assert "class folder(s) without images: empty_one" in result.stderr
    assert not (tmp_path / "run").exists()


def test_class_folder_names_must_be_utf8_without_line_breaks(tmp_path):
    write_image_folder(tmp_path / "a", classes=2, per_class=1)
    (tmp_path / "a" / "class_1").rename(tmp_path / "a" / os.fsdecode(b"caf\xe9"))
    with pytest.raises(InputError, match="is not valid UTF-8; rename the folder"):
        dsi.index_folder(tmp_path / "a")
    write_image_folder(tmp_path / "b", classes=2, per_class=1)
    (tmp_path / "b" / "class_1").rename(tmp_path / "b" / "two\nlines")
    with pytest.raises(InputError, match="line break"):
        dsi.index_folder(tmp_path / "b")


def test_top_level_symlinked_class_folder_is_listed_not_followed(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=2, per_class=2)
    (data / "everything").symlink_to(data, target_is_directory=True)
    index = dsi.index_folder(data)
    assert index.classes == ("class_0", "class_1")
    assert [(Path(s.path).name, s.reason) for s in index.skipped] == [
        ("everything", "symbolic link to a folder: not followed")]


def _csv_outside(tmp_path: Path, row: str) -> Path:
    write_image_folder(tmp_path / "outside", classes=2, per_class=2)
    inside = write_image_folder(tmp_path / "project" / "imgs", classes=2, per_class=2)
    (tmp_path / "project" / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    csv_path = tmp_path / "project" / "labels.csv"
    csv_path.write_text("path,label\nimgs/class_0/img_000.png,a\nimgs/class_1/img_000.png,b\n"
                        f"imgs/class_0/img_001.png,a\n{row}\n")
    assert inside.is_dir()
    return csv_path


@pytest.mark.parametrize("row", ["../outside/class_0/img_000.png,a", "link/class_1/img_000.png,b",
                                 "{outside}/class_0/img_001.png,a"])
def test_csv_paths_may_not_escape_the_csv_folder(tmp_path, row):
    csv_path = _csv_outside(tmp_path, row.format(outside=tmp_path / "outside"))
    with pytest.raises(UsageError, match=r"line 5: .* outside the CSV's folder .*--allow-outside-root"):
        dsi.index_csv(csv_path)
    index = dsi.index_csv(csv_path, allow_outside_root=True)
    assert len(index.paths) == 4 and all(Path(p).is_file() for p in index.paths)


def test_csv_escape_is_exit_2_with_one_line_naming_the_row_and_the_option(tmp_path):
    csv_path = _csv_outside(tmp_path, "../outside/class_0/img_000.png,a")
    result = _quick_cli_failure(str(csv_path), "-o", str(tmp_path / "run"))
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: {csv_path}: line 5: '../outside/class_0/img_000.png' resolves to ")
    assert message.endswith("or pass --allow-outside-root")


def _lambda_model(path: Path) -> Path:
    """A .keras file whose first layer matches mobilenet_v2 alpha 0.35 by name, followed by a Lambda."""
    from edgetl.tf_env import keras

    k = keras()
    image = k.Input((32, 32, 3))
    x = k.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="Conv1")(image)
    k.Model(image, k.layers.Lambda(lambda v: v * 2.0)(x)).save(str(path))
    return path


def test_weights_file_with_code_needs_trust_model(tmp_path):
    from edgetl.network.model import load_weights_file
    from edgetl.tf_env import keras

    weights = _lambda_model(tmp_path / "lambda.keras")
    result = _quick_cli_failure(str(write_image_folder(tmp_path / "data")), "-o", str(tmp_path / "run"),
                                "--weights", str(weights))
    assert "Lambda layer" in result.stderr and "--trust-model" in result.stderr
    assert not (tmp_path / "run").exists()
    k = keras()
    image = k.Input((32, 32, 3))
    target = k.Model(image, k.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="Conv1")(image))
    with pytest.raises(InputError, match="--trust-model"):
        load_weights_file(target, weights)
    assert load_weights_file(target, weights, trust=True) == 1
