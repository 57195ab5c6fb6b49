"""Read a PyTorch state dict saved in the legacy (non-zip) format, with numpy alone: no torch, no code run.

`torch.save(..., _use_new_zipfile_serialization=False)` writes five pickles back to back, then raw storages:

    1. the magic number 0x1950a86a20f9469cfc6c      2. the protocol version (1001)
    3. system info (byte order, type sizes)         4. the object: here an OrderedDict name -> tensor
    5. the list of storage keys, in the order their bytes follow
    then, for each key: the element count (int64, little-endian) and the elements, raw.

Inside pickle 4 a tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, and a
storage is a persistent id `("storage", torch.FloatStorage, key, location, count)`.

A pickle can call any importable function, so the file is untrusted input: the unpickler knows four
globals (OrderedDict, _rebuild_tensor_v2 and the storage types) and refuses everything else before it
is called. Every storage must be complete and every tensor must lie inside its storage.
"""

from __future__ import annotations

import dataclasses
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edgetl.errors import InputError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                  "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: Any
    count: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _StateDict(dict):
    """Stands in for collections.OrderedDict: torch sets a `_metadata` attribute on it (BUILD)."""


def _rebuild_tensor_v2(storage: Any, offset: Any, shape: Any, stride: Any, *_: Any) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("a tensor whose storage is not a persistent storage id")
    return _TensorRef(storage, int(offset), tuple(int(s) for s in shape), tuple(int(s) for s in stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return _StateDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return name  # only ever used as the storage type inside a persistent id
        raise pickle.UnpicklingError(f"refused global {module}.{name} (not part of a tensor state dict)")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in STORAGE_DTYPES):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
        return _StorageRef(str(pid[2]), STORAGE_DTYPES[pid[1]], int(pid[4]))


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """name -> numpy array (a copy, C-contiguous, little-endian) for every tensor of the state dict in `path`.

    Raise InputError naming the file for anything that is not a complete legacy state dict of tensors.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _read(f)
    except OSError as exc:
        raise InputError(f"{path}: cannot read weights file ({exc.strerror or exc})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, struct.error, TypeError, AttributeError,
            IndexError, KeyError) as exc:
        raise InputError(f"{path}: not a PyTorch legacy state dict edgetl can read safely ({exc})") from None


def _read(f: BinaryIO) -> dict[str, np.ndarray]:
    def load() -> Any:
        return _RestrictedUnpickler(f).load()

    if f.read(4) == b"PK\x03\x04":
        raise ValueError("wrong magic number: a zip-format checkpoint (torch >= 1.6); re-save it with "
                         "torch.save(state_dict, path, _use_new_zipfile_serialization=False)")
    f.seek(0)
    if load() != LEGACY_MAGIC:
        raise ValueError("wrong magic number (not a PyTorch legacy file)")
    if load() != LEGACY_PROTOCOL:
        raise ValueError("unsupported legacy protocol version")
    info = load()
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise ValueError("only little-endian files are supported")
    state = load()
    keys = load()
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise ValueError("the object is not a dict of tensors")
    refs: dict[str, _StorageRef] = {}
    for value in state.values():
        if not isinstance(value, _TensorRef):
            raise ValueError(f"a value of type {type(value).__name__} is not a tensor")
        refs[value.storage.key] = value.storage
    storages = {}
    for key in keys:
        key = str(key)
        ref = refs.get(key)
        (count,) = struct.unpack("<q", _exactly(f, 8))
        if ref is None or count != ref.count:
            raise ValueError(f"storage {key}: {count} elements, the tensors expect {ref and ref.count}")
        itemsize = np.dtype(ref.dtype).itemsize
        storages[key] = np.frombuffer(_exactly(f, count * itemsize), dtype=np.dtype(ref.dtype).newbyteorder("<"))
    missing = sorted(set(refs) - set(storages))
    if missing:
        raise ValueError(f"storage {missing[0]} has no data")
    return {str(name): _materialize(tensor, storages[tensor.storage.key]) for name, tensor in state.items()}


def _exactly(f: BinaryIO, size: int) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise EOFError(f"file ends early (wanted {size} bytes, got {len(data)})")
    return data


def _materialize(tensor: _TensorRef, storage: np.ndarray) -> np.ndarray:
    if len(tensor.shape) != len(tensor.stride) or any(s < 0 for s in (*tensor.shape, *tensor.stride)):
        raise ValueError("a tensor with a malformed shape or stride")
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride)) if all(tensor.shape) \
        else tensor.offset - 1
    if tensor.offset < 0 or last >= len(storage):
        raise ValueError("a tensor reaches outside its storage")
    itemsize = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[tensor.offset:], shape=tensor.shape,
                                           strides=tuple(s * itemsize for s in tensor.stride), writeable=False)
    return np.ascontiguousarray(view).astype(storage.dtype.newbyteorder("="), copy=True)
