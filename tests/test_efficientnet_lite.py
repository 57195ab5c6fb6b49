"""EfficientNet-Lite: the reference architecture, flat and quantizable, and the official checkpoint naming."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.backbones.checkpoints import EMA_SUFFIX, load_official_checkpoint
from edgetl.backbones.efficientnet_lite import build_efficientnet_lite
from edgetl.backbones.lite_architecture import EFFICIENTNET_LITE_PREPROCESSING
from edgetl.backbones.spec import BackboneSpec
from edgetl.errors import InputError, WeightsUnavailableError
from edgetl.network.model import build_classifier
from edgetl.tf_env import keras, tf

# Trainable parameters with the 1000-class ImageNet head, from the reference's own test
# (tensorflow/tpu models/official/efficientnet/lite/efficientnet_lite_builder_test.py, which sums
# tf.trainable_variables(): BatchNorm moving statistics are not counted). The lite README rounds
# them to 4.7M / 5.4M / 6.1M / 8.2M / 13.0M.
PUBLISHED_TRAINABLE_PARAMS = {0: 4_652_008, 1: 5_416_680, 2: 6_092_072, 3: 8_197_096, 4: 13_006_568}

LITE0_SPEC = BackboneSpec("efficientnet_lite0", lambda size, alpha, weights: build_efficientnet_lite(
    0, size, alpha, weights), EFFICIENTNET_LITE_PREPROCESSING, 224)

# efficientnet-lite0's block groups, written out from the reference (_DEFAULT_BLOCKS_ARGS):
# (kernel, repeats, expand ratio, output filters).
LITE0_GROUPS = [(3, 1, 1, 16), (3, 2, 6, 24), (5, 2, 6, 40), (3, 3, 6, 80), (5, 3, 6, 112), (5, 4, 6, 192),
                (3, 1, 6, 320)]


def _normalized_images(count: int, size: int) -> np.ndarray:
    pixels = np.random.default_rng(0).uniform(0, 255, (count, size, size, 3))
    p = EFFICIENTNET_LITE_PREPROCESSING
    return ((pixels - np.array(p.mean)) / np.array(p.std)).astype(np.float32)


@pytest.mark.parametrize("variant", sorted(PUBLISHED_TRAINABLE_PARAMS))
def test_parameter_count_matches_the_reference(variant):
    k = keras()
    backbone = build_efficientnet_lite(variant, 32, 1.0, None)  # parameters do not depend on image size
    logits = k.layers.Dense(1000)(k.layers.GlobalAveragePooling2D()(backbone.output))
    model = k.Model(backbone.input, logits)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == PUBLISHED_TRAINABLE_PARAMS[variant]


@pytest.mark.parametrize("image_size", [32, 224])
def test_lite0_output_is_1280_channels_at_stride_32(image_size):
    model = build_efficientnet_lite(0, image_size, 1.0, None)
    assert model.output_shape == (None, image_size // 32, image_size // 32, 1280)
    assert model.layers[-1].name == "top_activation"


def test_flat_and_every_layer_in_the_default_8bit_registry():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_registry

    k = keras()
    model = build_classifier(LITE0_SPEC, 32, 1.0, 3, imagenet=False, dropout=0.1)
    assert not [layer.name for layer in model.layers if isinstance(layer, k.Model)]
    assert not [layer.name for layer in model.layers if "Lambda" in type(layer).__name__]
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
    for previous, layer in zip(model.layers, model.layers[1:]):
        if isinstance(layer, k.layers.BatchNormalization):
            # TFMOT folds BatchNorm only into the Conv2D/DepthwiseConv2D right before it.
            assert isinstance(previous, (k.layers.Conv2D, k.layers.DepthwiseConv2D)), layer.name
            assert layer.inbound_nodes[0].inbound_layers is previous, layer.name
        else:
            assert registry.supports(layer), f"{layer.name} ({type(layer).__name__})"
    relus = [layer for layer in model.layers if isinstance(layer, k.layers.ReLU)]
    assert relus and all(layer.max_value == 6.0 for layer in relus)
    # Wrapping, a QAT step and full-int8 conversion run in tests/test_compressibility.py.


def test_stochastic_depth_is_a_training_only_dropout_before_each_residual_add():
    k = keras()
    plain = build_efficientnet_lite(0, 32, 1.0, None)
    with_drop = build_efficientnet_lite(0, 32, 1.0, None, stochastic_depth_rate=0.2)
    drops = [layer for layer in with_drop.layers if isinstance(layer, k.layers.Dropout)]
    adds = [layer for layer in with_drop.layers if isinstance(layer, k.layers.Add)]
    assert len(drops) == len(adds) == 9 and all(d.noise_shape == (None, 1, 1, 1) for d in drops)
    with_drop.set_weights(plain.get_weights())
    x = _normalized_images(2, 32)
    np.testing.assert_allclose(with_drop(x, training=False), plain(x, training=False), rtol=1e-5, atol=1e-6)


def test_imagenet_lite3_offline_names_tarball_folder_and_the_offline_backbones(tmp_path, monkeypatch):
    """Lite3/4 have no weights package: a real download attempt, the network made unreachable by a dead proxy."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("no_proxy", "")
    with pytest.raises(WeightsUnavailableError) as caught:
        build_efficientnet_lite(3, 64, 1.0, "imagenet")
    message = str(caught.value)
    assert "efficientnet-lite3.tar.gz" in message
    assert str(tmp_path / "models" / "efficientnet-lite3") in message
    assert "on this machine: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2" in message
    assert "--weights none" in message
    with pytest.raises(ValueError, match="alpha 1.0"):
        build_efficientnet_lite(0, 64, 0.75, "imagenet")


def official_lite0_variables() -> dict[str, tuple[int, ...]]:
    """name -> shape of each backbone variable in the official efficientnet-lite0 checkpoint.

    Written out independently of edgetl's loader, from efficientnet_model.py: scopes stem/, blocks_K/
    (K counted over all blocks) and head/; inside a scope tf.layers numbers same-class layers in call order.
    """
    scope = "efficientnet-lite0"
    names: dict[str, tuple[int, ...]] = {}

    def batch_norm(prefix: str, channels: int) -> None:
        for variable in ("gamma", "beta", "moving_mean", "moving_variance"):
            names[f"{prefix}/{variable}"] = (channels,)

    names[f"{scope}/stem/conv2d/kernel"] = (3, 3, 3, 32)
    batch_norm(f"{scope}/stem/tpu_batch_normalization", 32)
    channels, index = 32, 0
    for kernel, repeats, expand, out in LITE0_GROUPS:
        for _ in range(repeats):
            block = f"{scope}/blocks_{index}"
            if expand == 1:
                names[f"{block}/depthwise_conv2d/depthwise_kernel"] = (kernel, kernel, channels, 1)
                batch_norm(f"{block}/tpu_batch_normalization", channels)
                names[f"{block}/conv2d/kernel"] = (1, 1, channels, out)
                batch_norm(f"{block}/tpu_batch_normalization_1", out)
            else:
                hidden = channels * expand
                names[f"{block}/conv2d/kernel"] = (1, 1, channels, hidden)
                batch_norm(f"{block}/tpu_batch_normalization", hidden)
                names[f"{block}/depthwise_conv2d/depthwise_kernel"] = (kernel, kernel, hidden, 1)
                batch_norm(f"{block}/tpu_batch_normalization_1", hidden)
                names[f"{block}/conv2d_1/kernel"] = (1, 1, hidden, out)
                batch_norm(f"{block}/tpu_batch_normalization_2", out)
            channels, index = out, index + 1
    names[f"{scope}/head/conv2d/kernel"] = (1, 1, 320, 1280)
    batch_norm(f"{scope}/head/tpu_batch_normalization", 1280)
    return names


def write_tf1_checkpoint(directory, values: dict[str, np.ndarray]) -> None:
    """A name-keyed TF1 checkpoint (what tf.compat.v1.train.Saver wrote for the official release)."""
    t = tf()
    directory.mkdir(parents=True, exist_ok=True)
    with t.Graph().as_default():
        variables = {name: t.compat.v1.Variable(value, name=f"v{i}") for i, (name, value) in enumerate(values.items())}
        saver = t.compat.v1.train.Saver(var_list=variables)
        with t.compat.v1.Session() as session:
            session.run(t.compat.v1.global_variables_initializer())
            saver.save(session, str(directory / "model.ckpt"))


def test_official_checkpoint_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    official = official_lite0_variables()
    values = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in official.items()}
    stem_ema = "efficientnet-lite0/stem/conv2d/kernel" + EMA_SUFFIX
    extras = {stem_ema: rng.standard_normal((3, 3, 3, 32)).astype(np.float32),  # preferred over the raw value
              "efficientnet-lite0/head/dense/kernel": rng.standard_normal((1280, 1000)).astype(np.float32),
              "efficientnet-lite0/head/dense/bias": np.zeros(1000, np.float32),
              "global_step": np.array(1000, np.int64)}
    checkpoint_dir = tmp_path / "models" / "efficientnet-lite0"
    write_tf1_checkpoint(checkpoint_dir, values | extras)
    assert tf().train.load_checkpoint(str(checkpoint_dir)).has_tensor("efficientnet-lite0/blocks_15/conv2d_1/kernel")

    model = build_efficientnet_lite(0, 32, 1.0, None)
    assert load_official_checkpoint(model, checkpoint_dir, 0) == len([layer for layer in model.layers if layer.weights])

    # Every backbone weight holds exactly one written tensor, and every written backbone tensor is used.
    written = {array.tobytes(): name for name, array in (values | {stem_ema: extras[stem_ema]}).items()}
    used = [written.get(w.numpy().tobytes(), f"not from the checkpoint: {w.name}") for w in model.weights]
    assert sorted(used) == sorted((set(official) - {"efficientnet-lite0/stem/conv2d/kernel"}) | {stem_ema})
    # And the right one, by the reference's naming rules.
    def bn(prefix: str) -> list[str]:
        return [f"{prefix}/{v}" for v in ("gamma", "beta", "moving_mean", "moving_variance")]

    expected = {
        "block1a_dwconv": ["blocks_0/depthwise_conv2d/depthwise_kernel"],
        "block1a_dwconv_bn": bn("blocks_0/tpu_batch_normalization"),
        "block1a_project_conv": ["blocks_0/conv2d/kernel"],
        "block1a_project_bn": bn("blocks_0/tpu_batch_normalization_1"),
        "block2a_expand_conv": ["blocks_1/conv2d/kernel"],
        "block2a_expand_bn": bn("blocks_1/tpu_batch_normalization"),
        "block2b_dwconv": ["blocks_2/depthwise_conv2d/depthwise_kernel"],
        "block2b_dwconv_bn": bn("blocks_2/tpu_batch_normalization_1"),
        "block7a_project_conv": ["blocks_15/conv2d_1/kernel"],
        "block7a_project_bn": bn("blocks_15/tpu_batch_normalization_2"),
        "stem_bn": bn("stem/tpu_batch_normalization"),
        "top_conv": ["head/conv2d/kernel"],
        "top_bn": bn("head/tpu_batch_normalization"),
    }
    all_values = values | extras
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy(), all_values[stem_ema])
    for layer_name, names in expected.items():
        for weight, name in zip(model.get_layer(layer_name).weights, names, strict=True):
            np.testing.assert_array_equal(weight.numpy(), all_values[f"efficientnet-lite0/{name}"],
                                          err_msg=f"{layer_name} <- {name}")

    weighted = [layer for layer in model.layers if layer.weights]
    # stem conv+BN, block1a (4 layers), 15 expanding blocks (6 each), top conv+BN
    assert load_official_checkpoint(model, checkpoint_dir, 0) == len(weighted) == 2 + 4 + 15 * 6 + 2


def test_checkpoint_with_missing_or_misshaped_variables_is_an_input_error(tmp_path):
    official = official_lite0_variables()
    values = {name: np.ones(shape, np.float32) for name, shape in official.items()}
    del values["efficientnet-lite0/blocks_3/depthwise_conv2d/depthwise_kernel"]
    values["efficientnet-lite0/head/conv2d/kernel"] = np.ones((1, 1, 320, 1000), np.float32)
    write_tf1_checkpoint(tmp_path / "ckpt", values)
    (tmp_path / "ckpt" / "checkpoint").unlink()  # found by its .index file alone

    model = build_efficientnet_lite(0, 32, 1.0, None)
    before = model.get_layer("stem_conv").kernel.numpy().copy()
    with pytest.raises(InputError) as caught:
        load_official_checkpoint(model, tmp_path / "ckpt", 0)
    message = str(caught.value)
    assert "2 variable(s)" in message
    assert "efficientnet-lite0/blocks_3/depthwise_conv2d/depthwise_kernel missing" in message
    assert "efficientnet-lite0/head/conv2d/kernel has shape (1, 1, 320, 1000)" in message
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy(), before)  # all or nothing


def test_train_accepts_an_official_checkpoint_directory_as_weights(tmp_path):
    import edgetl
    from tests.conftest import TINY, write_image_folder

    rng = np.random.default_rng(2)
    write_tf1_checkpoint(tmp_path / "efficientnet-lite0", {name: rng.standard_normal(shape).astype(np.float32)
                                                           for name, shape in official_lite0_variables().items()})
    data = write_image_folder(tmp_path / "data", classes=2, per_class=4)
    manifest = edgetl.train(str(data), str(tmp_path / "run"),
                            **TINY | {"backbone": "efficientnet_lite0", "alpha": 1.0,
                                      "weights": str(tmp_path / "efficientnet-lite0")})
    assert manifest.sections["weights"]["source"] == "checkpoint"
    assert manifest.sections["weights"]["layers_loaded"] == 2 + 4 + 15 * 6 + 2
    assert manifest.sections["backbone"]["preprocessing"]["mean"] == [127.0] * 3
