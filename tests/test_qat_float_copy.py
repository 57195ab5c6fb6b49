"""qat.float_copy: QAT's trained weights in plain float layers, for converters that quantize by themselves.

ONNX Runtime quantizes a float graph with 7-bit weights. Given the QAT graph, tf2onnx turned TFMOT's fake-quant
nodes into QDQ pairs that ONNX Runtime quantized a second time, and PQAT's mask products became graph inputs no
caller could feed. The copy must carry what QAT trained (not the weights it started from), keep PQAT's zeros and
CQAT's clusters, and convert to ONNX where the QAT graph does not.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.compression import cluster, prune, qat
from edgetl.compression.fold import fold_batchnorm
from edgetl.converters.base import ConversionInput, ExportOptions
from edgetl.converters.onnx_export import KerasToONNX
from edgetl.errors import CheckFailedError

SIZE = 16
CLUSTERS = 4


def _small_model():
    """Conv/BatchNorm/ReLU and depthwise blocks, a residual Add and a Dense head: MobileNetV2's layer types at a
    size where CQAT trains in seconds (on MobileNetV2 itself, 4 CQAT steps took 5 minutes)."""
    from edgetl.tf_env import keras

    keras().utils.set_random_seed(0)
    layers = keras().layers
    image = keras().Input((SIZE, SIZE, 3))
    x = layers.ReLU(6.0, name="r1")(layers.BatchNormalization(name="bn1")(layers.Conv2D(16, 3, name="c1")(image)))
    y = layers.ReLU(6.0, name="r2")(layers.BatchNormalization(name="bn2")(
        layers.DepthwiseConv2D(3, padding="same", name="dw")(x)))
    y = layers.BatchNormalization(name="bn3")(layers.Conv2D(16, 1, name="c2")(y))
    x = layers.Add(name="add")([x, y])
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras().Model(image, layers.Dense(3, activation="softmax", name="head")(x))
    for layer in model.layers:  # frozen, as compress trains: in training mode, batch statistics moved activations
        if isinstance(layer, layers.BatchNormalization):  # past their calibrated ranges and QAT's gradients vanished
            layer.trainable = False
    return model


def _fit(model, x, y, callbacks=(), rate=1e-2):
    from edgetl.tf_env import keras

    model.compile(optimizer=keras().optimizers.Adam(rate), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=list(callbacks))


def _kernels(model):
    return {layer.name: layer.kernel.numpy() for layer in model.layers if type(layer).__name__ in ("Conv2D", "Dense")}


@pytest.mark.parametrize("preserve", ["none", "prune", "cluster"])
def test_float_copy_carries_what_qat_trained_and_keeps_zeros_and_clusters(preserve, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (16, SIZE, SIZE, 3)).astype("float32")
    y = np.arange(16) % 3
    model = _small_model()
    if preserve == "prune":
        wrapped = prune.apply(model, 0.5, 0, 1)
        _fit(wrapped, x, y, prune.callbacks())
        model = prune.strip(wrapped)
    elif preserve == "cluster":
        model, _ = fold_batchnorm(model)  # as compress does: the copy must follow the folded architecture
        wrapped = cluster.apply(model, CLUSTERS)
        _fit(wrapped, x, y)
        model = cluster.strip(wrapped)
    before = _kernels(model)
    wrapped = qat.apply(model, preserve, calibration=x)
    _fit(wrapped, x, y)
    copy = qat.float_copy(wrapped, model)

    assert not {type(layer).__name__ for layer in copy.layers} & {"QuantizeWrapperV2", "QuantizeLayer"}
    after = _kernels(copy)
    assert after.keys() == before.keys()
    kept = [name for name in after if np.allclose(after[name], before[name])]
    assert not kept, f"the copy kept the pre-QAT weights of {kept}"
    if preserve == "prune":
        zeros = {name: float(np.mean(k == 0)) for name, k in after.items()}
        assert min(zeros.values()) >= 0.45, f"PQAT's copy lost the pruned zeros: {zeros}"
    if preserve == "cluster":  # CQAT trains a kernel's centroids per output channel
        most = max(len(np.unique(k[..., channel])) for k in after.values() for channel in range(k.shape[-1]))
        assert most <= CLUSTERS, f"CQAT's copy has an output channel with {most} distinct values"

    options = ExportOptions(format="onnx", quantize="int8")
    KerasToONNX().convert(ConversionInput(copy, SIZE, ["a", "b", "c"], x), options, tmp_path / "copy.onnx")
    if preserve == "prune":  # the QAT graph itself: refused in one line, not left for a runtime to crash on
        with pytest.raises(CheckFailedError, match="graph inputs"):
            KerasToONNX().convert(ConversionInput(wrapped, SIZE, ["a", "b", "c"], x), options, tmp_path / "qat.onnx")


def test_a_float_layer_without_a_qat_counterpart_is_refused_not_left_with_its_old_weights():
    from edgetl.tf_env import keras

    model = _small_model()
    wrapped = qat.apply(model)

    def rename(layer):
        config = layer.get_config() | ({"name": "c2_renamed"} if layer.name == "c2" else {})
        return layer.__class__.from_config(config)

    renamed = keras().models.clone_model(model, clone_function=rename)
    with pytest.raises(CheckFailedError, match="1 layer.*first: c2_renamed"):
        qat.float_copy(wrapped, renamed)
