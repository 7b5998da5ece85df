"""Leave-one-sequence-out: folds built from frame names, no frame in two splits."""

from __future__ import annotations

from collections import Counter

import numpy as np
from prepared_fixture import write_prepared
import pytest

from fvt_segmentation.core.contract import CATEGORIES
from fvt_training.data.prepared import (
    DataError,
    holdout_split,
    label_frequencies,
    read_manifest,
    sequence_folds,
    sequence_of,
)

# CamVid's own naming (0006R0 frames carry an 'f'); every sequence's labels are one category,
# so the frequencies of any set of frames are known.
TRAIN = {'0001TP_006690': 'flat', '0001TP_006720': 'flat', '0006R0_f03780': 'sky',
         '0006R0_f03810': 'sky', '0006R0_f03840': 'sky', '0016E5_01860': 'human',
         '0016E5_01890': 'human'}
VAL = {'0016E5_07959': 'vehicle'}
SEQUENCES = ('0001TP', '0006R0', '0016E5')


def _frame(category: str) -> tuple[np.ndarray, np.ndarray]:
    label = np.full((4, 6), CATEGORIES.index(category), np.uint8)
    return np.zeros((4, 6, 3), np.uint8), label


@pytest.fixture(scope='module')
def manifest(tmp_path_factory):
    samples = {'train': {i: _frame(c) for i, c in TRAIN.items()},
               'val': {i: _frame(c) for i, c in VAL.items()}}
    return read_manifest(write_prepared(tmp_path_factory.mktemp('camvid'), samples, 'camvid',
                                        'CamVid-named frames'))


def test_the_sequence_is_the_frame_name_up_to_its_first_underscore():
    assert sequence_of('0006R0_f03780') == '0006R0'
    assert sequence_of('aachen_000000_000019') == 'aachen'  # Cityscapes: the city
    # A sequence whose name extends another's is a fold of its own.
    folds = sequence_folds(['0001TP_000010', '0001TP2_000010', '0001TP_000020'])
    assert folds == {'0001TP': ('0001TP_000010', '0001TP_000020'),
                     '0001TP2': ('0001TP2_000010',)}
    for bad in ('frame001', '_000010', '0001TP_'):
        with pytest.raises(DataError, match=f"frame id '{bad}' names no sequence: expected "
                                            '<sequence>_<frame>'):
            sequence_of(bad)


def test_folds_hold_every_train_frame_out_exactly_once_and_no_frame_in_two_splits(manifest):
    train_ids = manifest.ids('train')
    assert tuple(sequence_folds(train_ids)) == SEQUENCES
    held_out_anywhere = Counter()
    for sequence in SEQUENCES:
        trained, held_out = holdout_split(manifest, 'train', sequence)
        assert held_out and all(i.startswith(f'{sequence}_') for i in held_out)
        assert not any(i.startswith(f'{sequence}_') for i in trained)
        assert not set(trained) & set(held_out)
        assert sorted(trained + held_out) == sorted(train_ids)
        assert not (set(trained) | set(held_out)) & set(manifest.ids('val'))
        held_out_anywhere.update(held_out)
    assert held_out_anywhere == Counter(train_ids)


def test_an_unknown_or_only_sequence_names_the_sequences_found(manifest):
    with pytest.raises(DataError, match=r"split 'train' has no sequence '0005VD'; expected one "
                                        r'of .*: 0001TP \(2 frames\), 0006R0 \(3 frames\), '
                                        r'0016E5 \(2 frames\)'):
        holdout_split(manifest, 'train', '0005VD')
    with pytest.raises(DataError, match=r"split 'val' holds only sequence '0016E5' \(0016E5 "
                                        r'\(1 frames\)\); holding it out leaves no frame'):
        holdout_split(manifest, 'val', '0016E5')


def test_label_frequencies_count_only_the_frames_asked_for(manifest):
    np.testing.assert_allclose(label_frequencies(manifest, 'train', manifest.ids('train')),
                               manifest.class_frequencies('train'))
    trained, _ = holdout_split(manifest, 'train', '0006R0')
    expected = np.zeros(len(CATEGORIES))
    expected[[CATEGORIES.index('flat'), CATEGORIES.index('human')]] = 0.5
    np.testing.assert_allclose(label_frequencies(manifest, 'train', trained), expected)


def test_a_sequence_of_part_of_a_split_batches_only_those_frames(manifest):
    from fvt_training.data import pipeline

    trained, held_out = holdout_split(manifest, 'train', '0016E5')
    val = pipeline.make_sequence(manifest, 'train', ids=held_out, batch_size=1)
    assert val.ordered_ids == list(held_out)
    assert [val[i][1][0, 0, 0].argmax() for i in range(len(val))] == [
        CATEGORIES.index('human')] * 2
    train = pipeline.make_sequence(manifest, 'train', ids=trained, batch_size=2, shuffle=True)
    assert sorted(train.ordered_ids) == sorted(trained)
    with pytest.raises(DataError, match=r"ids \['0016E5_07959'\] are not in split 'train'"):
        pipeline.make_sequence(manifest, 'train', ids=['0016E5_07959'])


def test_a_union_of_splits_trains_on_both_and_reads_each_frame_from_its_folder(manifest):
    from fvt_training.data import pipeline
    from fvt_training.runs.frames import run_frames

    union = manifest.split('train+val')
    assert union.ids == manifest.ids('train') + manifest.ids('val')
    # 7 train frames (2 flat, 3 sky, 2 human) and 1 val frame (vehicle), all the same size.
    expected = np.zeros(len(CATEGORIES))
    for category, frames in (('flat', 2), ('sky', 3), ('human', 2), ('vehicle', 1)):
        expected[CATEGORIES.index(category)] = frames / 8
    np.testing.assert_allclose(manifest.class_frequencies('train+val'), expected)
    sequence = pipeline.make_sequence(manifest, 'train+val', batch_size=8)
    labels = sequence[0][1].argmax(-1)[:, 0, 0]
    assert [CATEGORIES[c] for c in labels] == [*TRAIN.values(), *VAL.values()]
    frames = run_frames({'data': {'train_split': 'train+val', 'val_split': 'val',
                                  'holdout_sequence': None}}, manifest)
    assert frames.trained_val_frames == 1 and len(frames.train_ids) == 8
    assert run_frames({'data': {'train_split': 'train', 'val_split': 'val',
                                'holdout_sequence': None}}, manifest).trained_val_frames == 0
    with pytest.raises(DataError, match=r"no split 'test'; this camvid folder has "
                                        r"\['train', 'val'\]"):
        manifest.split('train+test')
    with pytest.raises(DataError, match="'train\\+train' names a split twice"):
        manifest.split('train+train')
