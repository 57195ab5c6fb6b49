"""Shared fixtures: small image datasets generated at test time (no binary fixtures in the repo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLORS = [(220, 40, 40), (40, 180, 60), (40, 70, 220), (230, 200, 30)]


def class_image(label: int, index: int, size: int = 40) -> Image.Image:
    """A learnable picture: the class's colour as a filled shape on noise, varied per index."""
    rng = np.random.default_rng(1000 * label + index)
    pixels = rng.integers(0, 60, size=(size, size, 3)).astype(np.uint8)
    lo, hi = size // 5 + index % 3, size - size // 5 - index % 4
    pixels[lo:hi, lo:hi] = COLORS[label % len(COLORS)]
    return Image.fromarray(pixels)


def write_image_folder(root: Path, classes: int = 2, per_class: int = 8, size: int = 40,
                       ext: str = "png") -> Path:
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            class_image(label, i, size).save(folder / f"img_{i:03d}.{ext}")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "data")


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "edgetl", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=600)


# The smallest settings that still train a real MobileNet end to end.
TINY = {"backbone": "mobilenet_v2", "alpha": 0.35, "image_size": 32, "weights": "none", "epochs": 1,
        "batch_size": 8, "augment": False, "seed": 0}

MODES = ["none", "fp16", "dynamic", "int8"]


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """A small model that really learned (confident predictions), so quantization agreement means something."""
    import edgetl

    root = tmp_path_factory.mktemp("trained-run")
    data = write_image_folder(root / "data", classes=3, per_class=30)
    manifest = edgetl.train(str(data), str(root / "run"),
                            **TINY | {"epochs": 0, "fine_tune_epochs": 20, "fine_tune_layers": "all",
                                      "fine_tune_learning_rate": 2e-3, "batch_size": 16})
    assert manifest.metrics["val_accuracy"] >= 0.8, "the fixture model should have learned its easy task"
    return root / "run"


@pytest.fixture(scope="session")
def exported(run):
    """All eight format x mode artifacts of `run`."""
    from edgetl.export import export_run

    return {(fmt, mode): export_run(run, format=fmt, quantize=mode, calibration_size=24, verify_size=24)
            for fmt in ("tflite", "onnx") for mode in MODES}
