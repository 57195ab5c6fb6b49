"""Every registered backbone builds flat, carries its preprocessing contract, and trains a step."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgetl.backbones import BACKBONES, get_backbone
from edgetl.errors import UsageError
from edgetl.network.model import HEAD_PREFIX, backbone_layers, build_classifier
from edgetl.tf_env import keras


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_builds_flat_and_trains_one_step(name):
    spec = get_backbone(name)
    alpha = 0.35 if name == "mobilenet_v2" else 0.75
    model = build_classifier(spec, 32, alpha, 3, imagenet=False, dropout=0.1)
    # Flat: no layer is itself a Model, so TFMOT can wrap every layer later.
    assert not [layer.name for layer in model.layers if isinstance(layer, keras().Model)]
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 3)
    head = [layer.name for layer in model.layers if layer.name.startswith(HEAD_PREFIX)]
    assert head == ["head_pool", "head_dropout", "head_probs"]
    assert len(backbone_layers(model)) == len(model.layers) - 4  # input + 3 head layers
    # No Rescaling inside: normalization is the pipeline's job, per the spec's contract.
    assert not [layer for layer in model.layers if type(layer).__name__ in ("Rescaling", "Normalization")]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    y = np.array([0, 1, 2, 0])
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_preprocessing_contract_maps_pixels_to_minus_one_one():
    contract = get_backbone("mobilenet_v2").preprocessing.to_json()
    assert contract["mean"] == [127.5] * 3 and contract["std"] == [127.5] * 3
    assert contract["input_range"] == [-1.0, 1.0]


def test_unknown_backbone_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown backbone 'resnet50'"):
        get_backbone("resnet50")


def test_imagenet_weights_offline_is_a_clear_error(tmp_path):
    """Real download attempt with the network made unreachable through a dead local proxy."""
    script = textwrap.dedent(f"""
        import os, sys
        os.environ.update(KERAS_HOME={str(tmp_path)!r}, HTTPS_PROXY="http://127.0.0.1:9",
                          HTTP_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
                          http_proxy="http://127.0.0.1:9", NO_PROXY="", no_proxy="")
        from edgetl.backbones import get_backbone
        from edgetl.errors import WeightsUnavailableError
        from edgetl.network.model import build_classifier
        try:
            build_classifier(get_backbone("mobilenet_v2"), 96, 0.35, 2, imagenet=True, dropout=0.0)
        except WeightsUnavailableError as exc:
            print("MESSAGE:", exc)
            sys.exit(0)
        sys.exit("no error raised")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    message = result.stdout.split("MESSAGE:", 1)[1]
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in message
    assert str(tmp_path / "models") in message
    assert "--weights none" in message and "RUN_DIR" in message
    assert "Backbones with ImageNet weights on this machine: efficientnet_lite0" in message


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"])
def test_microcontroller_end_of_the_range_alpha_035_at_96_px(name):
    model = build_classifier(get_backbone(name), 96, 0.35, 5, imagenet=False, dropout=0.0)
    assert model.output_shape == (None, 5)
    assert model.count_params() < 500_000  # the width multiplier really shrank it
