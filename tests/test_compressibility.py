"""Every backbone x {prune, cluster, QAT}: wrap, train a step, strip, convert to full-int8 TFLite.

The matrix the field lacks: TFMOT breaks on tf_keras MobileNetV3 (TFOpLambda hard-swish), on
EfficientNet-B* (Rescaling, SE) and on nested transfer models. edgetl's backbones must all pass.
EfficientNet-Lite1..3 are left to their ends of the range, Lite0 and Lite4: the five share every
layer type and block and differ only in depth/width/resolution coefficients (all five build and
train in test_backbones.py); this keeps the CI run within its time budget. The minimalistic MobileNetV3s
are left out too: their layer types are a subset of the full V3s' (no squeeze-excite, no hard-swish),
they build and train in test_backbones.py and export to full int8 in test_mobilenet_v3.py; here they
cost ~155 s (2-core machine). MobileNetV3-Large stands in for itself through MobileNetV3-Small: the same
layer types and blocks (hard-swish, squeeze-excite, 5x5 depthwise, residual Add), deeper and wider; it
builds and trains in test_backbones.py and folds and exports in test_mobilenet_v3.py; here it cost CI ~108 s.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.artifacts.inspection import TFLITE_WEIGHT_OPS, inspect_model
from edgetl.backbones import BACKBONES, get_backbone
from edgetl.compression import cluster, prune, qat
from edgetl.converters.base import ConversionInput, ExportOptions
from edgetl.converters.tflite import KerasToTFLite
from edgetl.network.model import build_classifier

TECHNIQUES = {"prune": prune, "cluster": cluster, "qat": qat}
SIZE = 32
# EfficientNet-Lite0 stands for the family here: Lite1-4 are the same layer types, wider and deeper (each
# builds and trains a step in test_backbones.py); Lite4 alone cost CI ~110 s in this matrix.
LARGER_LITES = ("efficientnet_lite1", "efficientnet_lite2", "efficientnet_lite3", "efficientnet_lite4")
MINIMALISTIC_V3S = ("mobilenet_v3_small_minimalistic", "mobilenet_v3_large_minimalistic")
LARGER_V3 = ("mobilenet_v3_large",)  # MobileNetV3-Small's layer types, deeper and wider


def _alpha(name: str) -> float:
    return 0.35 if name == "mobilenet_v2" else (0.75 if name.startswith("mobilenet_v3") else 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("technique", sorted(TECHNIQUES))
@pytest.mark.parametrize("name", sorted(n for n in BACKBONES if n not in LARGER_LITES + MINIMALISTIC_V3S + LARGER_V3))
def test_backbone_compresses_and_converts_to_full_int8(name, technique, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (8, SIZE, SIZE, 3)).astype("float32")
    y = np.arange(8) % 3
    model = build_classifier(get_backbone(name), SIZE, _alpha(name), 3, imagenet=False, dropout=0.0)
    step = TECHNIQUES[technique]
    wrapped = step.apply(model)
    wrapper_types = {type(layer).__name__ for layer in wrapped.layers}
    expected = {"prune": "PruneLowMagnitude", "cluster": "ClusterWeights", "qat": "QuantizeWrapperV2"}[technique]
    assert expected in wrapper_types
    wrapped.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    fit_callbacks = prune.callbacks() if technique == "prune" else []
    history = wrapped.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=fit_callbacks)
    assert np.isfinite(history.history["loss"][0])
    plain = step.strip(wrapped)
    if technique != "qat":
        assert not {type(layer).__name__ for layer in plain.layers} & {"PruneLowMagnitude", "ClusterWeights"}
    if technique == "cluster":
        kernel = next(layer for layer in plain.layers if type(layer).__name__ == "Conv2D").kernel.numpy()
        assert len(np.unique(kernel)) <= 16
    out = tmp_path / "model.tflite"
    KerasToTFLite().convert(ConversionInput(plain, SIZE, ["a", "b", "c"], x),
                            ExportOptions(format="tflite", quantize="int8"), out)
    info = inspect_model(out)
    float_ops = [op["op"] for op in info["ops"] if op["op"] not in ("QUANTIZE", "DEQUANTIZE")
                 and any(t["dtype"] in ("float32", "float16") for t in op["inputs"] + op["outputs"])]
    assert float_ops == [], f"float ops left in the int8 model: {float_ops}"
    weight_ops = [op for op in info["ops"] if op["op"] in TFLITE_WEIGHT_OPS]
    assert weight_ops and all(op["inputs"][1]["dtype"] == "int8" for op in weight_ops)
