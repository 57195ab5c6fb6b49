"""Constrained fine-tuning: each option changes the update it should, and bad combinations are refused."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.backbones import get_backbone
from edgetl.network.model import backbone_layers, build_classifier
from edgetl.tf_env import tf
from edgetl.training.constraints import add_weight_penalty, layer_multipliers, make_optimizer
from tests.conftest import TINY, run_cli, write_image_folder


def _model():
    return build_classifier(get_backbone("mobilenet_v2"), 32, 0.35, 3, imagenet=False, dropout=0.0)


def _penalty(model) -> float:
    return float(sum(float(loss) for loss in model.losses))


def test_l2sp_is_zero_at_the_start_and_pulls_back_towards_it():
    model = _model()
    covered = add_weight_penalty(model, backbone_layers(model), "l2sp", 0.1)
    assert covered > 50
    head = model.layers[-1].kernel
    head_part = 0.1 * float(np.sum(head.numpy() ** 2))  # the head has no starting point: plain L2
    assert _penalty(model) == pytest.approx(head_part, rel=1e-5)
    kernel = model.get_layer("block_5_expand").kernel
    delta = np.random.default_rng(0).normal(0, 0.01, kernel.shape).astype(np.float32)
    kernel.assign_add(delta)
    assert _penalty(model) - head_part == pytest.approx(0.1 * float(np.sum(delta.astype(np.float64) ** 2)), rel=1e-4)
    with tf().GradientTape() as tape:
        total = tf().add_n(model.losses)
    gradient = tape.gradient(total, kernel).numpy()
    np.testing.assert_allclose(gradient, 2 * 0.1 * delta, rtol=1e-3, atol=1e-8)  # towards w0, not towards 0


def test_l2_pulls_towards_zero():
    model = _model()
    add_weight_penalty(model, backbone_layers(model), "l2", 0.1)
    kernel = model.get_layer("block_5_expand").kernel
    with tf().GradientTape() as tape:
        total = tf().add_n(model.losses)
    np.testing.assert_allclose(tape.gradient(total, kernel).numpy(), 2 * 0.1 * kernel.numpy(), rtol=1e-4, atol=1e-8)


def _two_steps(optimizer, first, second):
    variable = tf().Variable([0.0, 0.0])
    for gradient in (first, second):
        optimizer.apply_gradients([(tf().constant(gradient), variable)])
    return variable.numpy()


def test_clipnorm_bounds_the_global_gradient_norm():
    small, huge = [0.1, 0.2], [300.0, -400.0]  # norm 500, clipped to 1
    plain = _two_steps(make_optimizer(0.1), small, huge)
    clipped = _two_steps(make_optimizer(0.1, clipnorm=1.0), small, huge)
    reference = _two_steps(make_optimizer(0.1), small, [0.6, -0.8])  # the huge step, rescaled to norm 1
    np.testing.assert_allclose(clipped, reference, rtol=1e-5)
    assert not np.allclose(clipped, plain)


def test_layer_lr_decay_scales_each_update_and_decays_towards_the_stem():
    fast, slow = tf().Variable([1.0, 1.0], name="fast"), tf().Variable([1.0, 1.0], name="slow")
    optimizer = make_optimizer(0.01, multipliers={slow.name: 0.25})
    for _ in range(3):
        optimizer.apply_gradients([(tf().constant([1.0, -2.0]), fast), (tf().constant([1.0, -2.0]), slow)])
    np.testing.assert_allclose(1.0 - slow.numpy(), 0.25 * (1.0 - fast.numpy()), rtol=1e-5)
    model = _model()
    multipliers = layer_multipliers(model, backbone_layers(model), 0.9)
    head = model.layers[-1].kernel.name
    top, stem = model.get_layer("Conv_1").kernel.name, model.get_layer("Conv1").kernel.name
    assert head not in multipliers and multipliers[top] == pytest.approx(0.9)
    assert multipliers[stem] < 0.9 ** 30 and multipliers[stem] == min(multipliers.values())


def test_training_with_every_constraint_runs_and_records_them(run, tmp_path):
    import edgetl

    data = write_image_folder(tmp_path / "data", classes=3, per_class=8, size=32)
    manifest = edgetl.train(str(data), str(tmp_path / "out"), **TINY | {
        "weights": str(run), "fine_tune_epochs": 1, "fine_tune_layers": "all", "regularizer": "l2sp",
        "regularizer_strength": 0.01, "clipnorm": 1.0, "layer_lr_decay": 0.8})
    assert manifest.options["regularizer"] == "l2sp" and manifest.options["layer_lr_decay"] == 0.8
    assert all(np.isfinite(epoch["loss"]) for epoch in manifest.sections["history"])


@pytest.mark.parametrize("args, fragment", [
    (["--weights", "none", "--regularizer", "l2sp"], "needs --weights"),
    (["--weights", "none", "--layer-lr-decay", "1.5"], "--layer-lr-decay: must be in (0, 1]"),
    (["--weights", "none", "--clipnorm", "0"], "--clipnorm: must be > 0"),
])
def test_bad_constraint_options_are_usage_errors(tmp_path, args, fragment):
    data = write_image_folder(tmp_path / "data")
    result = run_cli("train", str(data), "-o", str(tmp_path / "out"), *args)
    assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr
