"""Keras -> ONNX with tf2onnx, then optional float16 weights or ONNX Runtime quantization.

The graph keeps the NHWC input the model was trained with, named "image", with a dynamic batch
dimension; `--nchw` puts a Transpose in front for NCHW callers. The output is named "probability"
(a multi-task model's outputs: after their tasks, in task order; edgetl/training/multitask.py).
tf2onnx logs tracebacks from its transpose optimizer even on success; they are captured and
summarized in the manifest instead of sprayed over the terminal.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

from edgetl.converters import onnx_passes, onnx_quantize
from edgetl.converters.base import ConversionInput, ExportOptions
from edgetl.errors import CheckFailedError
from edgetl.network.tasks import task_outputs
from edgetl.tf_env import tf

INPUT_NAME = "image"
OUTPUT_NAME = "probability"


class KerasToONNX:
    format = "onnx"
    suffix = ".onnx"
    # tf2onnx turns fake-quant nodes into QDQ pairs that ONNX Runtime's static quantization quantizes
    # again, unfused and slower; compress gives it QAT's weights in float layers (qat.float_copy).
    reads_fake_quant = False

    def check(self, options: ExportOptions) -> list[str]:
        return []

    def convert(self, source: ConversionInput, options: ExportOptions, out: Path) -> dict[str, Any]:
        import onnx
        import tf2onnx

        t = tf()
        model = source.model
        spec = t.TensorSpec([None, source.image_size, source.image_size, 3], t.float32, name=INPUT_NAME)
        function = t.function(lambda image: model(image, training=False), input_signature=[spec], autograph=False)
        with _captured_logs("tf2onnx") as records:
            try:
                proto, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=options.opset)
            except Exception as exc:  # tf2onnx raises assorted exception types
                raise CheckFailedError(f"ONNX conversion failed: {str(exc).splitlines()[0]}") from exc
        constants = {init.name for init in proto.graph.initializer}
        unbound = [i.name for i in proto.graph.input if i.name != INPUT_NAME and i.name not in constants]
        if unbound:  # seen on TFMOT's prune-preserving QAT graph (PQAT): its mask products stay graph inputs
            raise CheckFailedError(f"ONNX conversion left {len(unbound)} of the model's constants as graph inputs "
                                   f"(first: {unbound[0]}), so no runtime could feed them; export .tflite instead")
        for index, name in enumerate(task_outputs(model) or [OUTPUT_NAME]):  # multi-task: one output per task
            _rename_output(proto, name, index)
        facts: dict[str, Any] = {"converter": f"tf2onnx {tf2onnx.__version__}", "opset": options.opset,
                                 "converter_log": _summarize(records)}
        facts["graph_passes"] = {"identity_reshapes_dropped": onnx_passes.drop_identity_reshapes(proto)}
        if options.quantize != "int8":  # int8 keeps Add/Clip/Mul: ONNX Runtime has QLinear kernels for those
            facts["graph_passes"]["hard_sigmoid_fused"] = onnx_passes.fuse_hard_sigmoid(proto)
        if options.quantize == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16
            from onnxruntime.transformers.onnx_model import OnnxModel

            # Float16 weights and compute, float32 input/output so callers need no change. The
            # converter appends its input/output Casts out of order; ONNX requires topological order.
            wrapped = OnnxModel(convert_float_to_float16(proto, keep_io_types=True))
            wrapped.topological_sort()
            onnx.save(wrapped.model, str(out))
        elif options.quantize in ("int8", "dynamic"):
            float_path = out.with_name(out.stem + ".float.onnx")
            onnx.save(proto, str(float_path))
            try:
                quantized = onnx_quantize.quantize(float_path, out, options.quantize, source.calibration,
                                                   options.per_channel, options.float_fallback)
                for name in ("constant_scales_folded", "weights_narrowed_to_7_bits"):  # static int8's passes
                    if name in quantized:
                        facts["graph_passes"][name] = quantized.pop(name)
                facts |= quantized
            finally:
                float_path.unlink(missing_ok=True)
        else:
            onnx.save(proto, str(out))
        if options.nchw:  # last, so calibration above fed the NHWC graph the images as trained
            final = onnx.load(str(out))
            _add_nchw_input(final, source.image_size)
            onnx.save(final, str(out))
        return facts


def _rename_output(proto: Any, name: str, index: int = 0) -> None:
    old = proto.graph.output[index].name
    for node in proto.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    proto.graph.output[index].name = name


def _add_nchw_input(proto: Any, image_size: int) -> None:
    """Rename the NHWC input and feed it from a Transpose of a new NCHW input of the same name."""
    from onnx import TensorProto, helper

    nhwc = proto.graph.input[0]
    for node in proto.graph.node:
        node.input[:] = [f"{INPUT_NAME}_nhwc" if i == nhwc.name else i for i in node.input]
    transpose = helper.make_node("Transpose", [INPUT_NAME], [f"{INPUT_NAME}_nhwc"], perm=[0, 2, 3, 1],
                                 name="nchw_to_nhwc")
    proto.graph.node.insert(0, transpose)
    new_input = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, image_size, image_size])
    proto.graph.input.remove(nhwc)
    proto.graph.input.insert(0, new_input)


@contextlib.contextmanager
def _captured_logs(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(logger_name)
    handler, propagate, level = Collect(), logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = propagate, level


def _summarize(records: list[logging.LogRecord]) -> dict[str, Any]:
    by_level: dict[str, int] = {}
    for record in records:
        by_level[record.levelname] = by_level.get(record.levelname, 0) + 1
    first = sorted({r.getMessage().splitlines()[0][:200] for r in records})[:5]
    return {"counts": by_level, "first_messages": first}
