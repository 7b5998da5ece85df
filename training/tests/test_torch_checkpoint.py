"""The torch-free checkpoint reader: both torch.save formats, views, dtypes, bad files."""

from pathlib import Path
import pickle

import numpy as np
import pytest

from fvt_training.torch_checkpoint import CheckpointError, load_state_dict

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
