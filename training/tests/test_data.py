"""The input pipeline on a prepared dataset: ids, batches, shuffling, normalisation."""

from __future__ import annotations

import shutil

from fixtures_cityscapes import EXPECTED_FREQUENCIES, categories, frame_index, frame_value
import numpy as np
import pytest
import tf_keras

from fvt_segmentation.core.contract import Normalization
from fvt_training.data import pipeline
from fvt_training.data.prepared import DataError, load_pair, read_manifest

EXPECTED_LABEL = categories()[::2, ::2]  # the 64x32 frames prepared at 32x16


def frames_of(x: np.ndarray) -> list[int]:
    """Frame index of every sample of a batch, read back from its red channel (pixel / 255)."""
    reds = np.round(x[..., 0] * 255.0)
    assert (reds == reds[:, :1, :1]).all(), 'a sample mixes frames'
    return [frame_index(r) for r in reds[:, 0, 0]]


def epoch_frames(sequence: pipeline.SegmentationSequence) -> list[int]:
    return [f for i in range(len(sequence)) for f in frames_of(sequence[i][0])]


def id_frames(tree, ids) -> list[int]:
    return [frame_index(tree.values[i]) for i in ids]


def test_manifest_accessors(prepared_cityscapes):
    tree, folder = prepared_cityscapes
    manifest = read_manifest(folder)
    assert manifest.size == (32, 16) and manifest.height_width == (16, 32)
    assert pipeline.list_ids(folder, 'test') == tuple(tree.ids['val'])
    assert len(pipeline.list_ids(manifest, 'train')) == 7
    np.testing.assert_allclose(pipeline.class_frequencies(folder, 'val'), EXPECTED_FREQUENCIES)
    with pytest.raises(DataError, match=r"no split 'extra'; this cityscapes folder has "
                                             r"\['test', 'train', 'val'\]"):
        pipeline.list_ids(folder, 'extra')
    with pytest.raises(DataError, match=r"it holds prepared sizes \['32x16'\]: pass one"):
        read_manifest(folder.parent)


def test_load_pair(prepared_cityscapes):
    tree, folder = prepared_cityscapes
    manifest = read_manifest(folder)
    sample_id = manifest.ids('val')[0]
    image, label = load_pair(manifest, 'val', sample_id)
    assert image.dtype == np.uint8 and image.shape == (16, 32, 3)
    assert (image[..., 0] == tree.values[sample_id]).all()  # RGB order: red first
    assert (image[..., 2] == 200).all()
    np.testing.assert_array_equal(label, EXPECTED_LABEL)


def test_batches_in_manifest_order_without_shuffle(prepared_cityscapes):
    tree, folder = prepared_cityscapes
    sequence = pipeline.make_sequence(folder, 'train', batch_size=3)
    ids = pipeline.list_ids(folder, 'train')
    assert len(sequence) == 3  # 7 samples: 3 + 3 + 1
    for _ in range(2):
        seen = []
        for i in range(len(sequence)):
            x, y = sequence[i]
            assert x.dtype == np.float32 and y.dtype == np.float32
            assert x.shape[1:] == (16, 32, 3) and y.shape[1:] == (16, 32, 8)
            assert len(x) == len(y) == (3 if i < 2 else 1)
            np.testing.assert_array_equal(y.sum(axis=-1), 1.0)
            for label in np.argmax(y, axis=-1):
                np.testing.assert_array_equal(label, EXPECTED_LABEL)
            assert frames_of(x) == id_frames(tree, sequence.batch_ids(i))
            seen += sequence.batch_ids(i)
        assert seen == list(ids) == sequence.ordered_ids
        sequence.on_epoch_end()
    with pytest.raises(IndexError):
        sequence[3]


def test_shuffle_visits_every_sample_once_per_epoch_in_a_new_order(prepared_cityscapes):
    tree, folder = prepared_cityscapes
    ids = pipeline.list_ids(folder, 'train')
    sequence = pipeline.make_sequence(folder, 'train', batch_size=2, shuffle=True, seed=5,
                                  workers=3)
    orders = []
    for _ in range(4):
        frames = epoch_frames(sequence)
        # the batches hold the data of the shuffled ids (not the unshuffled files)
        assert frames == id_frames(tree, sequence.ordered_ids)
        assert sorted(frames) == sorted(id_frames(tree, ids))  # each sample exactly once
        orders.append(frames)
        sequence.on_epoch_end()
    assert len({tuple(o) for o in orders}) == 4
    assert tuple(id_frames(tree, ids)) not in {tuple(o) for o in orders}
    # the order depends only on seed and epoch
    again = pipeline.make_sequence(folder, 'train', batch_size=4, shuffle=True, seed=5)
    again.set_epoch(2)
    assert epoch_frames(again) == orders[2]
    other = pipeline.make_sequence(folder, 'train', batch_size=2, shuffle=True, seed=6)
    assert epoch_frames(other) != orders[0]


def test_normalisation_and_colour_order_match_the_contract(prepared_cityscapes):
    tree, folder = prepared_cityscapes
    normalization = Normalization(scale=0.5, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0))
    sequence = pipeline.make_sequence(folder, 'val', batch_size=1, normalization=normalization,
                                  color_order='BGR')
    x, _ = sequence[0]
    red = tree.values[sequence.batch_ids(0)[0]]
    green = EXPECTED_LABEL * 30.0
    # BGR: channel 0 is blue (200), channel 2 red; x = (pixel * scale - mean) / std
    np.testing.assert_allclose(x[0, ..., 0], (200 * 0.5 - 10) / 2, rtol=1e-6)
    np.testing.assert_allclose(x[0, ..., 1], (green * 0.5 - 20) / 4, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x[0, ..., 2], (red * 0.5 - 30) / 5, rtol=1e-6)


def test_augmentation_is_applied_and_reproducible_whatever_the_workers(prepared_cityscapes):
    _, folder = prepared_cityscapes

    def batches(workers: int) -> list[tuple[np.ndarray, np.ndarray]]:
        sequence = pipeline.make_sequence(folder, 'train', batch_size=4, shuffle=True, seed=3,
                                      augment='flip_rotate', workers=workers)
        return [sequence[i] for i in range(len(sequence))]

    plain = pipeline.make_sequence(folder, 'train', batch_size=4, shuffle=True, seed=3)
    first, second = batches(1), batches(3)
    assert any(not np.array_equal(np.argmax(y, -1), np.argmax(plain[i][1], -1))
               for i, (_, y) in enumerate(first))
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(y1.sum(axis=-1), 1.0)


def test_bad_arguments_and_damaged_files(prepared_cityscapes, tmp_path):
    _, folder = prepared_cityscapes
    with pytest.raises(DataError, match='batch_size must be a positive integer; got 0'):
        pipeline.make_sequence(folder, 'train', batch_size=0)
    with pytest.raises(DataError, match=r"color_order must be one of \['RGB', 'BGR'\]"):
        pipeline.make_sequence(folder, 'train', color_order='RGBA')
    copy = tmp_path / '32x16'
    shutil.copytree(folder, copy)
    sample_id = pipeline.list_ids(copy, 'val')[1]
    missing = copy / 'val' / 'labels' / f'{sample_id}.png'
    missing.unlink()
    sequence = pipeline.make_sequence(copy, 'val', batch_size=2, workers=2)
    with pytest.raises(DataError, match=f'{missing}: missing or not a readable PNG'):
        sequence[0]


def test_keras_fit_moves_the_order_on_every_epoch(prepared_cityscapes):
    _, folder = prepared_cityscapes
    sequence = pipeline.make_sequence(folder, 'train', batch_size=4, shuffle=True, seed=0)
    inputs = tf_keras.Input((16, 32, 3))
    model = tf_keras.Model(inputs, tf_keras.layers.Conv2D(8, 1, activation='softmax')(inputs))
    model.compile(optimizer='adam', loss='categorical_crossentropy')
    history = model.fit(sequence, epochs=3, verbose=0)
    assert len(history.history['loss']) == 3
    assert sequence.epoch == 3


def test_frame_values_are_decodable():
    assert [frame_index(frame_value(i)) for i in range(16)] == list(range(16))
