"""Write PyTorch ``.pth`` files without torch, in both ``torch.save`` formats, byte by byte.

The pickles are the ones ``torch.save`` writes for a state dict of ``_rebuild_tensor_v2``
calls (see ``training/tests/data/tiny_state_dict_*.pth``), but every offset, size, stride,
storage type and storage byte is the caller's, so tests can write what torch never would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
import io
from pathlib import Path
import pickle
import signal
import struct
from typing import Any
import zipfile

FORMATS = ('legacy', 'zip')
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
ITEM_SIZES = {'FloatStorage': 4, 'LongStorage': 8, 'HalfStorage': 2}

Tensor = tuple[str, str, Any, Any, Any]
"""(state-dict key, storage key, offset, size, stride)."""
Storages = dict[str, tuple[str, bytes | None]]
"""{storage key: (torch storage class name, its bytes, or None for none in the file)}."""


def ops(value: Any) -> bytes:
    """Return the protocol 2 opcodes that push ``value`` (no PROTO, no STOP)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def tensor_pickle(tensors: Sequence[Tensor], storages: Storages, legacy: bool) -> bytes:
    """Return the pickle of an OrderedDict of tensors as torch.save writes it."""
    out = [b'\x80\x02ccollections\nOrderedDict\n)R(']
    for key, storage, offset, size, stride in tensors:
        kind, raw = storages[storage]
        numel = len(raw or b'') // ITEM_SIZES.get(kind, 1)
        pid = (ops('storage') + f'ctorch\n{kind}\n'.encode() + ops(storage) + ops('cpu')
               + ops(numel) + (b'N' if legacy else b''))
        out += [ops(key), b'ctorch._utils\n_rebuild_tensor_v2\n((', pid, b'tQ', ops(offset),
                ops(size), ops(stride), b'\x89ccollections\nOrderedDict\n)RtR']
    return b''.join(out) + b'u.'


def checkpoint_bytes(fmt: str, object_pickle: bytes, storages: Storages) -> bytes:
    """Return a whole ``.pth`` file of format ``fmt`` around ``object_pickle``."""
    if fmt == 'legacy':
        out = [pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, 1001, {'little_endian': True})]
        listed = [k for k, (_kind, raw) in storages.items() if raw is not None]
        out += [object_pickle, pickle.dumps(listed, protocol=2)]
        for key in listed:
            kind, raw = storages[key]
            out += [struct.pack('<q', len(raw) // ITEM_SIZES.get(kind, 1)), raw]
        return b''.join(out)
    members = {'archive/data.pkl': object_pickle, 'archive/byteorder': b'little'}
    members.update({f'archive/data/{k}': raw for k, (_kind, raw) in storages.items()
                    if raw is not None})
    return zip_bytes(members)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """Return an uncompressed zip archive of ``members``, as torch writes them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_STORED) as archive:
        for name, raw in members.items():
            archive.writestr(name, raw)
    return buffer.getvalue()


def write_checkpoint(path: Path, fmt: str, tensors: Sequence[Tensor],
                     storages: Storages) -> Path:
    """Write a state dict of ``tensors`` over ``storages`` to ``path``; return ``path``."""
    path.write_bytes(checkpoint_bytes(fmt, tensor_pickle(tensors, storages, fmt == 'legacy'),
                                      storages))
    return path


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the block once ``seconds`` have passed (main thread, POSIX)."""

    def expire(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f'still running after {seconds} s')

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
