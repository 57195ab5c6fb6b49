"""Standard TFLite Metadata for image classifiers: write it into a .tflite model and read it back.

Stock clients (MediaPipe Tasks `ImageClassifier`, the LiteRT support library) take the input
normalization and the class names from this metadata, so a model that carries it needs no glue code.

The layout is the one of tflite-support's `metadata_schema.fbs` and its `MetadataPopulator`:

* the metadata is a flatbuffer with file identifier "M001", stored in a new Buffer of the model and
  named "TFLITE_METADATA" in the Model's `metadata` vector;
* associated files (here `labels.txt`) form a zip archive appended after the model flatbuffer, with
  offsets counted from the start of the file, so the .tflite file is also a valid zip file.

We write the flatbuffer ourselves because the official writer (the `tflite-support` package) cannot
be installed beside TensorFlow 2.21.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from typing import Any

import flatbuffers
from flatbuffers.table import Table

from edgetl.errors import InputError

METADATA_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
INPUT_NAME = "image"
OUTPUT_NAME = "probability"
EMBEDDING_NAME = "embedding"

_MODEL_IDENTIFIER = b"TFL3"
_METADATA_IDENTIFIER = b"M001"
# The oldest metadata parser that understands every field we write. Parsers refuse newer metadata,
# so this must not be higher than needed. Following tflite-support's metadata_version.cc, only
# vocabulary files, tokenizer options, subgraph process units, tensor groups, audio properties and
# later additions raise it above 1.0.0; image/feature properties, normalization, stats and
# TENSOR_AXIS_LABELS files are all 1.0.0.
_MIN_PARSER_VERSION = "1.0.0"

# Field numbers (declaration order) of the tables we use, from metadata_schema.fbs. A union field
# takes two numbers: its type tag first, then its value.
_MODEL_METADATA = {"name": 0, "description": 1, "version": 2, "subgraph_metadata": 3, "author": 4,
                   "license": 5, "associated_files": 6, "min_parser_version": 7}
_SUBGRAPH_METADATA = {"input_tensor_metadata": 2, "output_tensor_metadata": 3}
_TENSOR_METADATA = {"name": 0, "description": 1, "content": 3, "process_units": 4, "stats": 5,
                    "associated_files": 6}
_CONTENT = {"content_properties_type": 0, "content_properties": 1}
_IMAGE_PROPERTIES = {"color_space": 0}
_PROCESS_UNIT = {"options_type": 0, "options": 1}
_NORMALIZATION_OPTIONS = {"mean": 0, "std": 1}
_STATS = {"max": 0, "min": 1}
_ASSOCIATED_FILE = {"name": 0, "description": 1, "type": 2}
# Enum and union tag values.
_CONTENT_FEATURE_PROPERTIES = 1
_CONTENT_IMAGE_PROPERTIES = 2
_PROCESS_UNIT_NORMALIZATION = 1
_COLOR_SPACE_RGB = 1
_FILE_TENSOR_AXIS_LABELS = 2
# What reading a truncated or corrupt flatbuffer raises.
_PARSE_ERRORS = (struct.error, IndexError, ValueError)


def add_metadata(model: bytes, *, name: str, version: str, description: str, mean: list[float],
                 std: list[float], labels: list[str], author: str = "edgetl", license: str = "",
                 input_min: float | None = None, input_max: float | None = None,
                 outputs: list[tuple[str, str, list[str]]] | None = None) -> bytes:
    """Return `model` (a .tflite file's bytes) with image-classifier metadata and its label file.

    The input tensor is described as an RGB image that clients normalize as `(pixel - mean) / std`
    (one value for all channels, or one per channel; MediaPipe Tasks accept only the former, so bake
    per-channel normalization into the graph for them); `input_min`/`input_max` record the range of
    the normalized input. The output tensor is described as per-class probabilities in [0, 1], one
    per line of `labels.txt`. Metadata and label file already in the model are replaced.
    `outputs`: for a model with several output tensors (multi-task, edgetl/training/multitask.py), one
    (tensor name, label file name, labels) per output, in the model's output order, each described
    the same way with its own label file; `labels` is then the first output's.
    """
    _check_tflite(model)
    if not name:
        raise InputError("metadata: the model name must not be empty")
    outputs = outputs or [(OUTPUT_NAME, LABELS_FILE, labels)]
    for _, _, output_labels in outputs:
        if not output_labels:
            raise InputError("metadata: labels must not be empty")
        for label in output_labels:
            if not label or "\n" in label or "\r" in label:
                raise InputError(f"metadata: label {label!r} must be a non-empty single line (labels.txt has one per line)")
    _check_normalization(mean, std, input_min, input_max)

    tree = _parse(model)
    _check_classifier(tree, [len(output_labels) for _, _, output_labels in outputs])
    metadata = _build_metadata(name=name, version=version, description=description, author=author,
                               license=license, mean=mean, std=std, input_min=input_min,
                               input_max=input_max, outputs=[(n, f, len(l)) for n, f, l in outputs])
    return _with_metadata(tree, model, metadata, {file_name: output_labels for _, file_name, output_labels in outputs})


def add_embedder_metadata(model: bytes, *, name: str, version: str, description: str, mean: list[float],
                          std: list[float], author: str = "edgetl", license: str = "", input_min: float | None = None,
                          input_max: float | None = None) -> bytes:
    """Return `model` (an image embedding .tflite: one image in, one embedding vector out) with the metadata
    MediaPipe Tasks' `ImageEmbedder` reads: the input normalization as for a classifier, the output described
    as a feature vector (no label file)."""
    _check_tflite(model)
    _check_normalization(mean, std, input_min, input_max)
    tree = _parse(model)
    graph = tree.subgraphs[0] if len(tree.subgraphs or []) == 1 else None
    if graph is None or len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise InputError("metadata: an embedder has one subgraph with one input and one output")
    dim = int(graph.tensors[graph.outputs[0]].shape[-1])
    metadata = _build_metadata(name=name, version=version, description=description, author=author, license=license,
                               mean=mean, std=std, input_min=input_min, input_max=input_max,
                               outputs=[(EMBEDDING_NAME, None, dim)])
    return _with_metadata(tree, model, metadata, {})


def _parse(model: bytes) -> Any:
    from ai_edge_litert import schema_py_generated as schema

    try:
        return schema.ModelT.InitFromPackedBuf(model, 0)
    except _PARSE_ERRORS as error:
        raise InputError(f"metadata: the TFLite model is truncated or corrupt ({error})") from error


def _with_metadata(tree: Any, model: bytes, metadata: bytes, label_files: dict[str, list[str]]) -> bytes:
    """The model rebuilt with `metadata` as its TFLITE_METADATA buffer and the label files zipped after it."""
    from ai_edge_litert import schema_py_generated as schema

    # Models over 2 GB keep weights after the flatbuffer, at offsets that rebuilding it would break.
    if any(buffer.offset > 1 for buffer in tree.buffers or []) or any(
            op.largeCustomOptionsOffset > 1 for graph in tree.subgraphs for op in graph.operators or []):
        raise InputError("metadata: models that store data after the flatbuffer (over 2 GB) are not supported")

    metadata_buffer = schema.BufferT()
    metadata_buffer.data = list(metadata)
    entry = next((m for m in tree.metadata or [] if _text(m.name) == METADATA_NAME), None)
    if entry is not None:
        tree.buffers[entry.buffer] = metadata_buffer
    else:
        tree.buffers.append(metadata_buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(tree.buffers) - 1
        tree.metadata = [*(tree.metadata or []), entry]

    # Packing the model anew also drops any zip an earlier call appended.
    builder = flatbuffers.Builder(len(model) + len(metadata) + 1024)
    builder.Finish(tree.Pack(builder), file_identifier=_MODEL_IDENTIFIER)
    out = io.BytesIO()
    out.write(builder.Output())
    # Mode "w" on a stream positioned after the model writes offsets from the start of the stream,
    # as the official populator's append does; readers find the archive from its end.
    # A fixed timestamp keeps the output byte-for-byte reproducible.
    if label_files:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
            for file_name, output_labels in label_files.items():
                archive.writestr(zipfile.ZipInfo(file_name, date_time=(1980, 1, 1, 0, 0, 0)),
                                 "".join(f"{label}\n" for label in output_labels))
    return out.getvalue()


def read_metadata(model: bytes) -> dict[str, Any] | None:
    """The image-classifier metadata of a .tflite file, or None when it has no TFLITE_METADATA.

    Keys: name, version, description, author, license, min_parser_version, input_name, mean, std,
    input_min, input_max (lists of per-channel values, None when absent), output_name, labels
    (from the label file packed in the model; [] when there is none).
    """
    _check_tflite(model)
    try:
        return _read(model)
    except _PARSE_ERRORS as error:
        raise InputError(f"metadata: the TFLite model or its metadata is truncated or corrupt ({error})") from error


def _read(model: bytes) -> dict[str, Any] | None:
    from ai_edge_litert import schema_py_generated as schema

    tflite = schema.Model.GetRootAs(model, 0)
    buffer = None
    for i in range(tflite.MetadataLength()):
        if _text(tflite.Metadata(i).Name()) == METADATA_NAME:
            buffer = tflite.Buffers(tflite.Metadata(i).Buffer())
    if buffer is None:
        return None
    if buffer.Offset() > 1:
        data = bytes(model[buffer.Offset():buffer.Offset() + buffer.Size()])
    else:
        data = buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    if len(data) < 8 or data[4:8] != _METADATA_IDENTIFIER:
        raise InputError("metadata: the TFLITE_METADATA buffer is not TFLite Metadata (no M001 identifier)")

    root = _Reader.root(data)
    subgraphs = root.tables(_MODEL_METADATA["subgraph_metadata"])
    inputs = subgraphs[0].tables(_SUBGRAPH_METADATA["input_tensor_metadata"]) if subgraphs else []
    outputs = subgraphs[0].tables(_SUBGRAPH_METADATA["output_tensor_metadata"]) if subgraphs else []
    image = inputs[0] if inputs else None
    probability = outputs[0] if outputs else None

    normalization = None
    for unit in image.tables(_TENSOR_METADATA["process_units"]) if image else []:
        if unit.uint8(_PROCESS_UNIT["options_type"]) == _PROCESS_UNIT_NORMALIZATION:
            normalization = unit.table(_PROCESS_UNIT["options"])
            break
    stats = image.table(_TENSOR_METADATA["stats"]) if image else None
    label_file = None
    for file in probability.tables(_TENSOR_METADATA["associated_files"]) if probability else []:
        if file.uint8(_ASSOCIATED_FILE["type"]) == _FILE_TENSOR_AXIS_LABELS:
            label_file = file.string(_ASSOCIATED_FILE["name"])
            break

    return {
        "name": root.string(_MODEL_METADATA["name"]),
        "version": root.string(_MODEL_METADATA["version"]),
        "description": root.string(_MODEL_METADATA["description"]),
        "author": root.string(_MODEL_METADATA["author"]),
        "license": root.string(_MODEL_METADATA["license"]),
        "min_parser_version": root.string(_MODEL_METADATA["min_parser_version"]),
        "input_name": image.string(_TENSOR_METADATA["name"]) if image else "",
        "mean": normalization.floats(_NORMALIZATION_OPTIONS["mean"]) if normalization else None,
        "std": normalization.floats(_NORMALIZATION_OPTIONS["std"]) if normalization else None,
        "input_min": (stats.floats(_STATS["min"]) or None) if stats else None,
        "input_max": (stats.floats(_STATS["max"]) or None) if stats else None,
        "output_name": probability.string(_TENSOR_METADATA["name"]) if probability else "",
        "labels": _packed_labels(model, label_file) if label_file else [],
    }


def _check_tflite(model: bytes) -> None:
    if not isinstance(model, (bytes, bytearray)) or len(model) < 8 or model[4:8] != _MODEL_IDENTIFIER:
        raise InputError("metadata: not a TFLite model (no TFL3 flatbuffer identifier); truncated or another format?")


def _check_normalization(mean: list[float], std: list[float], input_min: float | None,
                         input_max: float | None) -> None:
    if len(mean) not in (1, 3) or len(std) != len(mean):
        raise InputError(f"metadata: mean and std need 1 or 3 values each, the same number; got {len(mean)} "
                         f"and {len(std)}")
    if not all(math.isfinite(v) for v in [*mean, *std]) or any(v == 0 for v in std):
        raise InputError(f"metadata: mean {mean} and std {std} must be finite numbers and std not 0")
    if (input_min is None) != (input_max is None):
        raise InputError("metadata: give both input_min and input_max, or neither")
    if input_min is not None and not input_min < input_max:
        raise InputError(f"metadata: input_min ({input_min}) must be below input_max ({input_max})")


def _check_classifier(tree: Any, label_counts: list[int]) -> None:
    """The metadata describes one image input and one vector of class scores per output; refuse other models."""
    if len(tree.subgraphs or []) != 1:
        raise InputError(f"metadata: expected a model with one subgraph, got {len(tree.subgraphs or [])}")
    graph = tree.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != len(label_counts):
        expected = "one output tensor" if len(label_counts) == 1 else f"{len(label_counts)} output tensors"
        raise InputError(f"metadata: expected one input and {expected}, got {len(graph.inputs)} and "
                         f"{len(graph.outputs)}")
    input_shape = [int(d) for d in graph.tensors[graph.inputs[0]].shape]
    if len(input_shape) != 4 or input_shape[3] != 3:
        raise InputError(f"metadata: the input must be an RGB image [batch, height, width, 3], got {input_shape}")
    for output, num_labels in zip(graph.outputs, label_counts):
        output_shape = [int(d) for d in graph.tensors[output].shape]
        if not output_shape or output_shape[-1] != num_labels:
            raise InputError(f"metadata: {num_labels} labels for a model whose output has shape {output_shape}")


def _build_metadata(*, name: str, version: str, description: str, author: str, license: str,
                    mean: list[float], std: list[float], input_min: float | None, input_max: float | None,
                    outputs: list[tuple[str, str | None, int]]) -> bytes:
    """Serialize a ModelMetadata flatbuffer, children before parents as flatbuffers requires."""
    builder = flatbuffers.Builder(1024)

    def string(value: str) -> int | None:
        return builder.CreateString(value) if value else None

    def floats(values: list[float]) -> int:
        builder.StartVector(4, len(values), 4)
        for value in reversed(values):
            builder.PrependFloat32(float(value))
        return builder.EndVector()

    def vector(offsets: list[int]) -> int:
        builder.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            builder.PrependUOffsetTRelative(offset)
        return builder.EndVector()

    def table(fields: dict[int, int | None] | None = None, tags: dict[int, int] | None = None) -> int:
        """A table of offset fields and one-byte fields (enums and union tags); None fields are left out."""
        fields = {slot: value for slot, value in (fields or {}).items() if value is not None}
        tags = tags or {}
        builder.StartObject(1 + max([*fields, *tags], default=-1))
        for slot, value in fields.items():
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        for slot, value in tags.items():
            builder.PrependUint8Slot(slot, value, 0)
        return builder.EndObject()

    channels = "one value for all channels" if len(mean) == 1 else "per RGB channel"
    image_stats = None
    if input_min is not None:
        image_stats = table({_STATS["max"]: floats([input_max]), _STATS["min"]: floats([input_min])})
    image = table({
        _TENSOR_METADATA["name"]: string(INPUT_NAME),
        _TENSOR_METADATA["description"]: string(
            f"RGB image, normalized as (pixel - mean) / std with mean {list(mean)} and std {list(std)} ({channels})."),
        _TENSOR_METADATA["content"]: table(
            {_CONTENT["content_properties"]: table(tags={_IMAGE_PROPERTIES["color_space"]: _COLOR_SPACE_RGB})},
            tags={_CONTENT["content_properties_type"]: _CONTENT_IMAGE_PROPERTIES}),
        _TENSOR_METADATA["process_units"]: vector([table(
            {_PROCESS_UNIT["options"]: table({_NORMALIZATION_OPTIONS["mean"]: floats(mean),
                                               _NORMALIZATION_OPTIONS["std"]: floats(std)})},
            tags={_PROCESS_UNIT["options_type"]: _PROCESS_UNIT_NORMALIZATION})]),
        _TENSOR_METADATA["stats"]: image_stats,
    })
    described = []
    for output_name, file_name, num_labels in outputs:
        if file_name is None:  # an embedding: a feature vector, no labels
            described.append(table({
                _TENSOR_METADATA["name"]: string(output_name),
                _TENSOR_METADATA["description"]: string(
                    f"Embedding of {num_labels} values; compare two with cosine similarity."),
                _TENSOR_METADATA["content"]: table(
                    {_CONTENT["content_properties"]: table()},
                    tags={_CONTENT["content_properties_type"]: _CONTENT_FEATURE_PROPERTIES})}))
            continue
        label_file = table({_ASSOCIATED_FILE["name"]: string(file_name),
                            _ASSOCIATED_FILE["description"]: string("Class names, one per line, in output order.")},
                           tags={_ASSOCIATED_FILE["type"]: _FILE_TENSOR_AXIS_LABELS})
        described.append(table({
            _TENSOR_METADATA["name"]: string(output_name),
            _TENSOR_METADATA["description"]: string(f"Probabilities of the {num_labels} classes in {file_name}."),
            _TENSOR_METADATA["content"]: table(
                {_CONTENT["content_properties"]: table()},
                tags={_CONTENT["content_properties_type"]: _CONTENT_FEATURE_PROPERTIES}),
            _TENSOR_METADATA["stats"]: table({_STATS["max"]: floats([1.0]), _STATS["min"]: floats([0.0])}),
            _TENSOR_METADATA["associated_files"]: vector([label_file]),
        }))
    subgraph = table({_SUBGRAPH_METADATA["input_tensor_metadata"]: vector([image]),
                      _SUBGRAPH_METADATA["output_tensor_metadata"]: vector(described)})
    root = table({
        _MODEL_METADATA["name"]: string(name),
        _MODEL_METADATA["description"]: string(description),
        _MODEL_METADATA["version"]: string(version),
        _MODEL_METADATA["subgraph_metadata"]: vector([subgraph]),
        _MODEL_METADATA["author"]: string(author),
        _MODEL_METADATA["license"]: string(license),
        _MODEL_METADATA["min_parser_version"]: string(_MIN_PARSER_VERSION),
    })
    builder.Finish(root, file_identifier=_METADATA_IDENTIFIER)
    return bytes(builder.Output())


class _Reader:
    """Reads fields of one flatbuffer table by field number (the schema's declaration order)."""

    def __init__(self, table: Table) -> None:
        self._table = table

    @classmethod
    def root(cls, data: bytes) -> _Reader:
        return cls(Table(data, flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0)))

    def _position(self, slot: int) -> int:
        return self._table.Offset(4 + 2 * slot)  # vtable entries start after the vtable's two sizes

    def string(self, slot: int) -> str:
        position = self._position(slot)
        return self._table.String(position + self._table.Pos).decode() if position else ""

    def uint8(self, slot: int) -> int:
        position = self._position(slot)
        return self._table.Get(flatbuffers.number_types.Uint8Flags, position + self._table.Pos) if position else 0

    def floats(self, slot: int) -> list[float]:
        position = self._position(slot)
        if not position:
            return []
        start = self._table.Vector(position)
        return [self._table.Get(flatbuffers.number_types.Float32Flags, start + 4 * i)
                for i in range(self._table.VectorLen(position))]

    def table(self, slot: int) -> _Reader | None:
        position = self._position(slot)
        if not position:
            return None
        return _Reader(Table(self._table.Bytes, self._table.Indirect(position + self._table.Pos)))

    def tables(self, slot: int) -> list[_Reader]:
        position = self._position(slot)
        if not position:
            return []
        start = self._table.Vector(position)
        return [_Reader(Table(self._table.Bytes, self._table.Indirect(start + 4 * i)))
                for i in range(self._table.VectorLen(position))]


def _packed_labels(model: bytes, file_name: str) -> list[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            text = archive.read(file_name).decode("utf-8")
    except (zipfile.BadZipFile, KeyError):
        return []
    return text.splitlines()


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")
