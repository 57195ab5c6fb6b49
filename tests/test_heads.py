"""Heads: attention pooling and MLP heads train, export verified to int8 TFLite and ONNX, and the
attention weights are a distribution over the feature map's positions."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.backbones import get_backbone
from edgetl.network.model import build_classifier
from edgetl.tf_env import keras
from tests.conftest import TINY, write_image_folder


def test_attention_pooling_is_a_weighted_mean_over_positions():
    model = build_classifier(get_backbone("mobilenet_v2"), 64, 0.35, 3, imagenet=False, dropout=0.0, head="attention")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    probe = keras().Model(model.input, [model.get_layer("head_attention_weights").output,
                                        model.get_layer("head_attention_features").output,
                                        model.get_layer("head_attention_pool").output])
    weights, features, pooled = (t.numpy() for t in probe(x))
    assert weights.shape == (2, 4) and np.allclose(weights.sum(axis=1), 1.0, atol=1e-6)  # 64 px -> 2x2 positions
    np.testing.assert_allclose(pooled, np.einsum("bp,bpc->bc", weights, features), rtol=1e-4, atol=1e-5)


def test_mlp_head_has_its_hidden_layer():
    model = build_classifier(get_backbone("mobilenet_v2"), 32, 0.35, 3, imagenet=False, dropout=0.0, head="mlp")
    assert model.get_layer("head_hidden").units == 256 and model.output.shape[-1] == 3


@pytest.mark.parametrize("head", ["attention"])
def test_head_trains_and_exports_verified_int8(head, run, tmp_path):
    import edgetl
    from edgetl.exporting.exporter import export_run

    # 12 per class left 6 validation images, where one flip is 17 % of the agreement (failed on an AVX2 machine).
    data = write_image_folder(tmp_path / "data", classes=3, per_class=30, size=32)
    # On the trained fixture's backbone (chained transfer), so predictions are confident: int8
    # agreement on the near-ties of an untrained model would mean nothing.
    manifest = edgetl.train(str(data), str(tmp_path / "run"), **TINY | {
        "head": head, "weights": str(run), "epochs": 6, "learning_rate": 3e-3})
    assert manifest.options["head"] == head
    for fmt in ("tflite", "onnx"):
        artifact = export_run(tmp_path / "run", format=fmt, quantize="int8", calibration_size=16, verify_size=18)
        assert artifact.sections["verification"]["problems"] == []
