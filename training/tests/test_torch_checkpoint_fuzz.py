"""Mutated checkpoints: the reader returns arrays made of the file's bytes or CheckpointError.

Both torch.save formats of the tiny state dict in ``data/`` are cut short, have bytes flipped,
integers and opcodes of their pickles replaced (inside a zip whose checksums still hold, so the
pickle reaches the unpickler) and zip members dropped, cut, grown or renamed. Each load runs
under a deadline and the whole run under an address-space limit, so a hang or an allocation of
what a file merely claims fails the test instead of the machine.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
import io
from pathlib import Path
import pickletools
import random
import resource
import struct
import time
import zipfile

from helpers_checkpoint import deadline, ops, zip_bytes
import numpy as np
import pytest

from fvt_training.models.torch_checkpoint import CheckpointError, load_state_dict

DATA = Path(__file__).parent / 'data'
CASES_PER_FORMAT = 1600
INTERESTING = (0, 1, -1, 2, 23, 24, 25, 255, 256, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 60,
               2 ** 63 - 1, 2 ** 63, 2 ** 64, -2 ** 63)
INT_OPCODES = {'BININT', 'BININT1', 'BININT2', 'LONG1'}
OPCODE_BYTES = [op.code.encode('latin-1') for op in pickletools.opcodes]
HEADROOM = 1 << 30  # address space the whole run may add; MAX_TENSOR_BYTES is twice that


def _opcodes(data: bytes, end: int) -> list[tuple[int, int, str]]:
    """Return (start, end, name) of every opcode of the pickles in ``data[:end]``."""
    stream, found = io.BytesIO(data[:end]), []
    while stream.tell() < end:
        ops_ = list(pickletools.genops(stream))
        bounds = [pos for _op, _arg, pos in ops_[1:]] + [stream.tell()]
        found += [(pos, stop, op.name) for (op, _arg, pos), stop in zip(ops_, bounds, strict=True)]
    return found


def _value(rng: random.Random) -> int:
    return rng.choice(INTERESTING) if rng.random() < 0.5 else rng.randint(-300, 300)


def _splice(data: bytes, start: int, end: int, new: bytes) -> bytes:
    return data[:start] + new + data[end:]


def _edit_pickle(rng: random.Random, pkl: bytes, table: list[tuple[int, int, str]]) -> bytes:
    """Replace one integer (or, one time in three, one opcode byte) of ``pkl``."""
    if rng.random() < 2 / 3:
        start, end, _name = rng.choice([t for t in table if t[2] in INT_OPCODES])
        return _splice(pkl, start, end, ops(_value(rng)))
    start, _end, _name = rng.choice(table)
    return _splice(pkl, start, start + 1, rng.choice(OPCODE_BYTES))


def _flip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    return bytes(out)


def _legacy_mutants() -> Iterator[tuple[str, Callable[[random.Random], bytes]]]:
    base = (DATA / 'tiny_state_dict_legacy.pth').read_bytes()
    pickles_end = 766  # five pickles, then storages '94237908123856', '...307968', '...354256'
    table = _opcodes(base, pickles_end)
    counts = [pickles_end, pickles_end + 8 + 8, pickles_end + 16 + 2 * 2]

    def count(rng: random.Random) -> bytes:
        at = rng.choice(counts)
        return _splice(base, at, at + 8, struct.pack('<q', rng.choice(INTERESTING[:-3])))

    yield 'truncate', lambda rng: base[:rng.randrange(len(base))]
    yield 'flip', lambda rng: _flip(rng, base)
    yield 'pickle', lambda rng: _edit_pickle(rng, base, table)
    yield 'count', count


def _zip_mutants() -> Iterator[tuple[str, Callable[[random.Random], bytes]]]:
    base = (DATA / 'tiny_state_dict_zip.pth').read_bytes()
    with zipfile.ZipFile(io.BytesIO(base)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    pkl_name = next(n for n in members if n.endswith('/data.pkl'))
    table = _opcodes(members[pkl_name], len(members[pkl_name]))

    def pickle_edit(rng: random.Random) -> bytes:
        return zip_bytes({**members, pkl_name: _edit_pickle(rng, members[pkl_name], table)})

    def member_edit(rng: random.Random) -> bytes:
        edited = dict(members)
        name = rng.choice(sorted(edited))
        raw = edited.pop(name)
        action = rng.randrange(4)
        if action == 1:
            edited[name] = raw[:rng.randrange(len(raw) + 1)]
        elif action == 2:
            edited[name] = raw + rng.randbytes(rng.randint(1, 9))
        elif action == 3:
            edited[name + rng.choice(['x', '/', '0'])] = raw
        return zip_bytes(edited)

    yield 'truncate', lambda rng: base[:rng.randrange(len(base))]
    yield 'flip', lambda rng: _flip(rng, base)
    yield 'pickle', pickle_edit
    yield 'member', member_edit


def _arrays(obj: object) -> Iterator[np.ndarray]:
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _arrays(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _arrays(value)


@contextmanager
def _address_space_limit(extra: int) -> Iterator[None]:
    """Let the process map at most ``extra`` more bytes than it has now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    status = Path('/proc/self/status').read_text()
    mapped = int(next(line for line in status.splitlines() if line.startswith('VmSize:'))
                 .split()[1]) * 1024
    limit = mapped + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize('fmt, mutants', [('legacy', _legacy_mutants), ('zip', _zip_mutants)])
def test_mutated_checkpoints_load_from_their_bytes_or_raise_checkpoint_error(tmp_path, fmt,
                                                                           mutants):
    kinds = list(mutants())
    path = tmp_path / f'mutant_{fmt}.pth'
    failures, outcomes = [], {}
    started = time.perf_counter()
    with _address_space_limit(HEADROOM):
        for seed in range(CASES_PER_FORMAT):
            kind, mutate = kinds[seed % len(kinds)]
            data = mutate(random.Random(seed))
            path.write_bytes(data)
            try:
                with deadline(5):
                    state = load_state_dict(path)
            except CheckpointError:
                outcomes[kind, 'refused'] = outcomes.get((kind, 'refused'), 0) + 1
                continue
            except BaseException as err:  # noqa: BLE001 - anything else is the finding
                failures.append(f'seed {seed} ({kind}): {type(err).__name__}: {err}'[:300])
                continue
            outcomes[kind, 'loaded'] = outcomes.get((kind, 'loaded'), 0) + 1
            # An element read from outside the storage would be bytes the file does not hold.
            for array in _arrays(state):
                for element in {array.dtype.type(v).tobytes() for v in array.ravel()}:
                    if element not in data:
                        failures.append(f'seed {seed} ({kind}): {element!r} is not in the file')
    elapsed = time.perf_counter() - started
    assert not failures, '\n'.join(failures[:20])
    # Every kind of mutation both gets past the reader at least once and is refused.
    assert all(outcomes.get((kind, 'refused')) for kind, _ in kinds), outcomes
    assert elapsed < 60, f'{CASES_PER_FORMAT} cases took {elapsed:.1f} s'
