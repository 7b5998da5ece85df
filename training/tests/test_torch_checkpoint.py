"""The torch-free checkpoint reader: both torch.save formats, views, dtypes, bad files."""

from pathlib import Path
import pickle
import re
import struct

from helpers_checkpoint import FORMATS, checkpoint_bytes, deadline, write_checkpoint
import numpy as np
import pytest

from fvt_training.models.torch_checkpoint import MAX_TENSOR_BYTES, CheckpointError, load_state_dict

DATA = Path(__file__).parent / 'data'


@pytest.mark.parametrize('name', ['tiny_state_dict_legacy.pth', 'tiny_state_dict_zip.pth'])
def test_both_formats_give_the_tensors_torch_saved(name):
    # Written by training/scripts/make_efficientnet_lite_reference.py with torch 2.13.
    expected = np.load(DATA / 'tiny_state_dict.npz')
    state = load_state_dict(DATA / name)
    assert list(state) == ['conv.weight', 'conv.weight_t', 'row', 'bn.num_batches_tracked',
                           'half']
    for key in expected.files:
        assert state[key].dtype == expected[key].dtype, key
        assert state[key].shape == expected[key].shape, key
        np.testing.assert_array_equal(state[key], expected[key], err_msg=key)
    # Views of one storage come back as independent arrays.
    assert state['conv.weight_t'].flags['C_CONTIGUOUS']
    assert not np.shares_memory(state['conv.weight'], state['conv.weight_t'])


def test_other_files_are_refused_with_the_reason(tmp_path):
    text = tmp_path / 'notes.pth'
    text.write_text('not a checkpoint')
    with pytest.raises(CheckpointError, match='notes.pth: not a readable PyTorch checkpoint'):
        load_state_dict(text)
    wrong_magic = tmp_path / 'magic.pth'
    wrong_magic.write_bytes(pickle.dumps(12345, protocol=2))
    with pytest.raises(CheckpointError, match='wrong magic number'):
        load_state_dict(wrong_magic)


def test_a_pickle_that_names_other_classes_is_refused_not_imported(tmp_path):
    # A malicious or foreign pickle must not get to import and call arbitrary code.
    evil = tmp_path / 'evil.pth'
    with evil.open('wb') as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({'little_endian': True}, f, protocol=2)
        f.write(b'\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.')
    with pytest.raises(CheckpointError, match='holds os.system; expected only tensors'):
        load_state_dict(evil)


ONE_FLOAT = {'0': ('FloatStorage', np.float32([1.5]).tobytes())}


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('offset, size, stride, expected', [
    # One float in the storage, 64 asked for: the 63 after it are someone else's memory.
    (0, (64,), (1,), "offset 0, size (64,) and stride (1,) reach element 63 of storage '0'; "
                     'expected below its 1 elements'),
    (1, (1,), (1,), "reach element 1 of storage '0'; expected below its 1 elements"),
    (2 ** 40, (), (), "reach element 1099511627776 of storage '0'"),
    (0, (2,), (2 ** 62,), "reach element 4611686018427387904 of storage '0'"),
    (0, (2,), (-1,), 'stride (-1,); expected a tuple of ints in [0, 2**63 - 1]'),
    (-1, (1,), (1,), 'offset -1; expected an int in [0, 2**63 - 1]'),
    ('0', (1,), (1,), "offset '0'; expected an int"),
    (True, (1,), (1,), 'offset True; expected an int'),
    (0, (2 ** 64,), (1,), 'size (18446744073709551616,); expected a tuple of ints'),
    (0, 7, (1,), 'size 7; expected a tuple of ints'),
    # Products that overflow int64, and a claim of 2**60 elements that stride 0 keeps inside
    # the storage: both refused before anything is allocated.
    (0, (2 ** 62, 2 ** 62), (1, 1), f'spans {2 ** 124} float32 elements'),
    (0, (2 ** 60,), (0,), f'({2 ** 62} bytes); expected at most {MAX_TENSOR_BYTES} bytes'),
    # Empty, yet numpy refuses a shape whose other sides overflow: the reader says so first.
    (0, (2 ** 62, 0), (1, 1), f'size ({2 ** 62}, 0) spans {2 ** 62} float32 elements'),
    (0, (2, 2), (1,), 'size (2, 2) has 2 dimensions, stride (1,) 1; expected as many'),
    (0, (1,) * 33, (0,) * 33, '33 dimensions; expected at most 32'),
])
def test_a_tensor_outside_its_storage_is_refused_naming_it(tmp_path, fmt, offset, size, stride,
                                                           expected):
    path = write_checkpoint(tmp_path / 'bad.pth', fmt, [('enc.w', '0', offset, size, stride)],
                            ONE_FLOAT)
    named = re.escape("bad.pth: tensor 'enc.w': ") + '.*' + re.escape(expected)
    with pytest.raises(CheckpointError, match=named):
        load_state_dict(path)


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('offset, size, stride, expected', [
    (0, (1,), (2 ** 62,), [1.5]),  # a side of length 1 never steps: any stride is fine
    (0, (3,), (0,), [1.5, 1.5, 1.5]),  # expanded: stride 0 reads one element three times
    (0, (), (), 1.5),
    (99, (0, 3), (3, 1), np.zeros((0, 3))),  # nothing to read, so no offset is past the end
])
def test_tensors_inside_their_storage_load(tmp_path, fmt, offset, size, stride, expected):
    path = write_checkpoint(tmp_path / 'x.pth', fmt, [('w', '0', offset, size, stride)],
                            ONE_FLOAT)
    state = load_state_dict(path)
    np.testing.assert_array_equal(state['w'], np.float32(expected), strict=True)


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('storages, expected', [
    ({'0': ('ComplexFloatStorage', bytes(8))},
     "storage '0' holds torch.ComplexFloatStorage; expected one of FloatStorage, "),
    ({'0': ('FloatStorage', None)}, {'legacy': "storage '0' has no data in the file",
                                     'zip': "storage '0' has no member archive/data/0 in the "
                                            'archive'}),
])
def test_a_tensor_without_a_readable_storage_is_refused_naming_it(tmp_path, fmt, storages,
                                                                  expected):
    path = write_checkpoint(tmp_path / 'bad.pth', fmt, [('enc.w', '0', 0, (1,), (1,))],
                            storages)
    text = expected[fmt] if isinstance(expected, dict) else expected
    with pytest.raises(CheckpointError, match=re.escape(f"bad.pth: tensor 'enc.w': {text}")):
        load_state_dict(path)


def test_zip_storage_bytes_must_be_whole_elements(tmp_path):
    path = write_checkpoint(tmp_path / 'bad.pth', 'zip', [('enc.w', '0', 0, (1,), (1,))],
                            {'0': ('FloatStorage', bytes(6))})
    with pytest.raises(CheckpointError, match=re.escape(
            "tensor 'enc.w': storage '0' has 6 bytes; expected a multiple of 4 (float32)")):
        load_state_dict(path)


def test_legacy_storages_after_one_of_unknown_size_are_not_read(tmp_path):
    # Legacy storages lie end to end: past one of unknown element size, none can be found.
    storages = {'0': ('ComplexFloatStorage', bytes(8)), '1': ('FloatStorage', bytes(4))}
    path = write_checkpoint(tmp_path / 'bad.pth', 'legacy',
                            [('b', '1', 0, (1,), (1,)), ('a', '0', 0, (1,), (1,))], storages)
    with pytest.raises(CheckpointError, match=re.escape(
            "tensor 'b': storage '1' is not read: storage '0' before it has an unknown type")):
        load_state_dict(path)


@pytest.mark.parametrize('count', [2 ** 60, -1, 2])
def test_a_legacy_storage_longer_than_the_file_is_refused(tmp_path, count):
    path = write_checkpoint(tmp_path / 'bad.pth', 'legacy', [('w', '0', 0, (1,), (1,))],
                            ONE_FLOAT)
    raw = path.read_bytes()  # ends with the 8-byte element count, then the one float
    path.write_bytes(raw[:-12] + struct.pack('<q', count) + raw[-4:])
    with pytest.raises(CheckpointError, match=re.escape(
            f"storage '0' claims {count} elements ({count * 4} bytes); expected at most the 4 "
            'bytes left in the file')):
        load_state_dict(path)


def _object_file(tmp_path, fmt, object_pickle):
    path = tmp_path / 'bad.pth'
    path.write_bytes(checkpoint_bytes(fmt, object_pickle, {}))
    return path


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('object_pickle, expected', [
    # LONG_BINPUT 2**31: the unpickler would grow its memo to 2**32 entries (32 GiB) at once.
    (b'\x80\x02K\x01r' + struct.pack('<I', 2 ** 31) + b'.',
     'memo index 2147483648 after 3 opcodes; expected an index below the opcode count'),
    # BINBYTES8 of 2**40 bytes: the unpickler would allocate them before reading.
    (b'\x80\x04\x8e' + struct.pack('<Q', 2 ** 40) + b'.',
     'expected 1099511627776 bytes in a bytes8, but only'),
], ids=['memo', 'bytes8'])
def test_a_pickle_that_claims_memory_it_does_not_hold_is_refused(tmp_path, fmt, object_pickle,
                                                                 expected):
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        load_state_dict(_object_file(tmp_path, fmt, object_pickle))


def _nested(depth):
    # {'k': [[[...]]]}: EMPTY_LISTs, then APPENDs fold each into the one below.
    return b'\x80\x02}X\x01\x00\x00\x00k' + b']' * depth + b'a' * (depth - 1) + b's.'


def _shared(levels):
    # {'k': L40} with L(i) = [L(i-1), L(i-1)]: 41 lists, 2**40 paths through them.
    # Each list is built on the stack, memoised as i and popped; the last is fetched back.
    out = [b'\x80\x02}X\x01\x00\x00\x00k]q\x000']
    out += [b'(h' + bytes([i - 1]) + b'h' + bytes([i - 1]) + b'lq' + bytes([i]) + b'0'
            for i in range(1, levels + 1)]
    return b''.join(out) + b'h' + bytes([levels]) + b's.'


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('object_pickle, expected', [
    (b'\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.',
     "'a' contains itself; expected a tree of dicts, lists and tuples"),
    (_nested(200), "'k'[0][0]"),
], ids=['cycle', 'deep'])
def test_objects_that_never_end_are_refused(tmp_path, fmt, object_pickle, expected):
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        load_state_dict(_object_file(tmp_path, fmt, object_pickle))


def test_shared_containers_are_walked_once(tmp_path):
    with deadline(10):
        state = load_state_dict(_object_file(tmp_path, 'zip', _shared(40)))
    level = state['k']
    for _ in range(40):
        assert level[0] is level[1]
        level = level[0]
    assert level == []


def test_a_file_that_cannot_be_read_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape(
            'missing.pth: cannot be read (No such file or directory); expected a PyTorch')):
        load_state_dict(tmp_path / 'missing.pth')
    with pytest.raises(CheckpointError, match='cannot be read .*; expected a PyTorch'):
        load_state_dict(tmp_path)
