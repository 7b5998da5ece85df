"""`fvt-train prepare`: splits, label mapping, resizing, manifest, idempotence and bad input."""

from __future__ import annotations

from datetime import datetime
import json
from pathlib import Path

import cv2
from fixtures_cityscapes import EXPECTED_FREQUENCIES, categories, rgb_image
import numpy as np
from PIL import Image
import pytest

from fvt_segmentation.core.contract import CATEGORIES
from fvt_training.cli import main
from fvt_training.data.datasets import UNKNOWN_LABEL, cityscapes_label_table, split_train_val
from fvt_training.data.prepared import read_manifest

# CamVid id -> category id, written out by hand from the dataset README's table.
CAMVID_EXPECTED = {0: 5, 1: 2, 2: 3, 3: 1, 4: 1, 5: 4, 6: 3, 7: 2, 8: 7, 9: 6, 10: 6, 11: 0}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(['prepare', *argv])
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    return code, err


def prepare_cityscapes(capsys, tree, out: Path, *extra: str) -> tuple[int, str]:
    return run(capsys, 'cityscapes', '--root', str(tree.root), '--out', str(out),
               '--workers', '2', *extra)


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == 'RGB'
        return np.asarray(image)


def read_label(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == 'L'
        return np.asarray(image)


def all_files(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob('*')) if p.is_file()}


def test_cityscapes_label_table_follows_the_official_categories():
    table = cityscapes_label_table()
    expected = {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 1, 8: 1, 9: 1, 10: 1, 11: 2, 12: 2,
                13: 2, 17: 3, 19: 3, 20: 3, 21: 4, 22: 4, 23: 5, 24: 6, 25: 6, 26: 7, 27: 7,
                31: 7, 33: 7}
    assert {i: int(table[i]) for i in expected} == expected
    assert table[34] == UNKNOWN_LABEL and table[255] == UNKNOWN_LABEL


def test_split_is_deterministic_disjoint_and_depends_on_seed():
    ids = [f'city_{i:06d}' for i in range(40)]
    train, val = split_train_val(ids, 0.25, seed=3)
    assert (train, val) == split_train_val(list(reversed(ids)), 0.25, seed=3)
    assert len(val) == 10 and sorted(train + val) == ids
    assert split_train_val(ids, 0.25, seed=4)[1] != val


def test_cityscapes_splits_manifest_and_sizes(capsys, cityscapes_tree, tmp_path):
    out = tmp_path / 'out'
    code, err = prepare_cityscapes(capsys, cityscapes_tree, out, '--size', '64x32,32x16',
                                   '--size', '16x8', '--val-fraction', '0.3', '--seed', '7')
    assert code == 0, err
    official = cityscapes_tree.ids
    splits = None
    for width, height in ((64, 32), (32, 16), (16, 8)):
        folder = out / f'{width}x{height}'
        raw = json.loads((folder / 'manifest.json').read_text())
        manifest = read_manifest(folder)
        assert raw['dataset'] == 'cityscapes' and raw['size'] == [width, height]
        assert raw['categories'] == list(CATEGORIES)
        assert raw['seed'] == 7 and raw['val_fraction'] == 0.3
        assert raw['source_root'] == str(cityscapes_tree.root.resolve())
        datetime.fromisoformat(raw['created'])
        assert set(raw['splits']) == {'train', 'val', 'test'}
        # official val is our test; official train is split 7/3; official test is unused
        assert list(manifest.ids('test')) == official['val']
        train, val = manifest.ids('train'), manifest.ids('val')
        assert len(val) == 3 and not set(train) & set(val)
        assert sorted(train + val) == official['train']
        assert not set(official['test']) & set(train + val + manifest.ids('test'))
        # every size holds the same split
        splits = splits or (train, val)
        assert (train, val) == splits
        for split, info in raw['splits'].items():
            assert info['count'] == len(info['ids'])
            assert sum(info['class_frequencies']) == pytest.approx(1.0)
            assert info['class_frequencies'] == pytest.approx(EXPECTED_FREQUENCIES)
            for kind in ('images', 'labels'):
                stems = sorted(p.stem for p in (folder / split / kind).iterdir())
                assert stems == info['ids']


def test_cityscapes_pixels_are_mapped_and_resized(capsys, cityscapes_tree, tmp_path):
    out = tmp_path / 'out'
    code, err = prepare_cityscapes(capsys, cityscapes_tree, out, '--size', '64x32',
                                   '--size', '16x8')
    assert code == 0, err
    full, small = out / '64x32', out / '16x8'
    for split in ('train', 'val', 'test'):
        for sample_id in read_manifest(full).ids(split):
            red = cityscapes_tree.values[sample_id]
            image = read_rgb(full / split / 'images' / f'{sample_id}.png')
            expected = rgb_image(0)
            expected[..., 0] = red
            np.testing.assert_array_equal(image, expected)
            label = read_label(full / split / 'labels' / f'{sample_id}.png')
            np.testing.assert_array_equal(label, categories())
            # 4x smaller: blocks are 8-pixel aligned, so both resizes are exact
            image = read_rgb(small / split / 'images' / f'{sample_id}.png')
            np.testing.assert_array_equal(image, expected[::4, ::4])
            label = read_label(small / split / 'labels' / f'{sample_id}.png')
            np.testing.assert_array_equal(label, categories()[::4, ::4])


def test_rerun_skips_complete_sizes_and_finishes_partial_ones(capsys, cityscapes_tree,
                                                              tmp_path):
    out = tmp_path / 'out'
    args = ('--size', '32x16,16x8')
    assert prepare_cityscapes(capsys, cityscapes_tree, out, *args)[0] == 0
    before = all_files(out)
    manifest_before = json.loads((out / '32x16' / 'manifest.json').read_text())

    code, err = prepare_cityscapes(capsys, cityscapes_tree, out, *args)
    assert code == 0 and err.count('up to date') == 2
    assert all_files(out) == before

    # simulate a crash: one label gone, a temporary file left, no manifest
    folder = out / '32x16'
    sample_id = manifest_before['splits']['train']['ids'][0]
    (folder / 'train' / 'labels' / f'{sample_id}.png').unlink()
    (folder / 'manifest.json').unlink()
    leftover = folder / 'train' / 'images' / '.tmp-123-x.png'
    leftover.write_bytes(b'half')
    code, err = prepare_cityscapes(capsys, cityscapes_tree, out, *args)
    assert code == 0, err
    after = all_files(out)
    assert not leftover.exists()
    # the incomplete pair is rebuilt from its source; nothing else is touched
    rebuilt = {folder / 'train' / kind / f'{sample_id}.png' for kind in ('images', 'labels')}
    assert rebuilt <= set(after)
    changed = {p for p in after if after[p] != before.get(p)}
    assert changed == rebuilt | {folder / 'manifest.json'}
    manifest_after = json.loads((folder / 'manifest.json').read_text())
    manifest_before.pop('created'), manifest_after.pop('created')
    assert manifest_after == manifest_before


def test_labels_are_resized_on_their_image_and_older_shifted_ones_rebuilt(capsys,
                                                                          cityscapes_tree,
                                                                          tmp_path):
    # 64x32 -> 36x18 is a factor of 16/9: OpenCV's INTER_NEAREST picks other source pixels
    # than the pixel-centred resize the images' area resize agrees with.
    out = tmp_path / 'out'
    assert prepare_cityscapes(capsys, cityscapes_tree, out, '--size', '36x18')[0] == 0
    folder = out / '36x18'
    labels = sorted(folder.rglob('labels/*.png'))
    centred = cv2.resize(categories(), (36, 18), interpolation=cv2.INTER_NEAREST_EXACT)
    shifted = cv2.resize(categories(), (36, 18), interpolation=cv2.INTER_NEAREST)
    assert not np.array_equal(centred, shifted)
    for path in labels:
        np.testing.assert_array_equal(read_label(path), centred)
    # A folder of an earlier version: shifted labels, a manifest without label_resize.
    raw = json.loads((folder / 'manifest.json').read_text())
    assert raw.pop('label_resize') == 'nearest_exact'
    (folder / 'manifest.json').write_text(json.dumps(raw))
    for path in labels:
        Image.fromarray(shifted).save(path)
    assert read_manifest(folder).label_resize == 'nearest'
    code, err = prepare_cityscapes(capsys, cityscapes_tree, out, '--size', '36x18')
    assert code == 0 and f'rebuilding {len(labels)} labels' in err
    for path in labels:
        np.testing.assert_array_equal(read_label(path), centred)
    assert read_manifest(folder).label_resize == 'nearest_exact'
    assert 'up to date' in prepare_cityscapes(capsys, cityscapes_tree, out, '--size', '36x18')[1]


def test_new_seed_moves_frames_between_splits(capsys, cityscapes_tree, tmp_path):
    out = tmp_path / 'out'
    code, err = prepare_cityscapes(capsys, cityscapes_tree, out, '--size', '16x8', '--seed', '1')
    assert code == 0, err
    first = read_manifest(out / '16x8')
    code, err = prepare_cityscapes(capsys, cityscapes_tree, out, '--size', '16x8', '--seed', '2')
    assert code == 0, err
    second = read_manifest(out / '16x8')
    assert second.seed == 2 and second.ids('val') != first.ids('val')
    for split in ('train', 'val'):
        for kind in ('images', 'labels'):
            stems = sorted(p.stem for p in (out / '16x8' / split / kind).iterdir())
            assert stems == list(second.ids(split))


def test_missing_label_is_named_and_nothing_is_written(capsys, cityscapes_tree, tmp_path):
    image = next((cityscapes_tree.root / 'leftImg8bit' / 'train').glob('*/*.png'))
    label = (cityscapes_tree.root / 'gtFine' / 'train' / image.parent.name
             / image.name.replace('_leftImg8bit', '_gtFine_labelIds'))
    label.unlink()
    out = tmp_path / 'out'
    code, err = prepare_cityscapes(capsys, cityscapes_tree, out, '--size', '32x16')
    assert code == 2
    assert f'{image.resolve()}: no label; expected {label.resolve()}' in err
    assert not out.exists()


@pytest.mark.parametrize('damage', ['truncated image', 'size mismatch', 'unknown id',
                                    'colour label'])
def test_bad_file_is_named_and_no_manifest_is_written(capsys, cityscapes_tree, tmp_path,
                                                      damage):
    image = sorted((cityscapes_tree.root / 'leftImg8bit' / 'val').glob('*/*.png'))[0]
    label = (cityscapes_tree.root / 'gtFine' / 'val' / image.parent.name
             / image.name.replace('_leftImg8bit', '_gtFine_labelIds'))
    original = image.read_bytes(), label.read_bytes()
    if damage == 'truncated image':
        bad, expected = image, 'cannot be decoded'
        image.write_bytes(original[0][:len(original[0]) // 2])
    elif damage == 'size mismatch':
        bad, expected = label, f'size 32x16 does not match its image {image.resolve()} (64x32)'
        cv2.imwrite(str(label), np.full((16, 32), 7, np.uint8))
    elif damage == 'unknown id':
        bad, expected = label, 'label ids [200] are not in the table'
        ids = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
        ids[0, 0] = 200
        cv2.imwrite(str(label), ids)
    else:
        bad, expected = label, 'expected a single-channel uint8 label image; found 3 channel'
        cv2.imwrite(str(label), np.zeros((32, 64, 3), np.uint8))
    out = tmp_path / 'out'
    code, err = prepare_cityscapes(capsys, cityscapes_tree, out, '--size', '32x16')
    assert code == 2
    assert f'{bad.resolve()}: {expected}' in err
    folder = out / '32x16'
    assert not (folder / 'manifest.json').exists()
    written = [p for p in folder.rglob('*') if p.is_file()]
    assert not [p for p in written if p.name.startswith('.tmp')]
    assert all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None for p in written)

    # repaired input: the same command completes the folder
    image.write_bytes(original[0])
    label.write_bytes(original[1])
    code, err = prepare_cityscapes(capsys, cityscapes_tree, out, '--size', '32x16')
    assert code == 0, err
    assert read_manifest(folder).ids('test') == tuple(cityscapes_tree.ids['val'])


@pytest.mark.parametrize('argv, expected', [
    (('--root', '{missing}', '--size', '32x16'), 'nowhere: Cityscapes root folder not found'),
    (('--root', '{root}/gtFine', '--size', '32x16'), 'leftImg8bit/train: folder not found'),
    (('--root', '{root}', '--size', '32*16'), '--size expects WxH with positive integers'),
    (('--root', '{root}', '--size', '0x16'), "got '0x16'"),
    (('--root', '{root}', '--size', '32x16', '--val-fraction', '1.5'),
     '--val-fraction must be between 0 and 1'),
])
def test_bad_arguments_exit_2_with_a_message(capsys, cityscapes_tree, tmp_path, argv,
                                             expected):
    argv = [a.format(missing=tmp_path / 'nowhere', root=cityscapes_tree.root) for a in argv]
    code, err = run(capsys, 'cityscapes', '--out', str(tmp_path / 'out'), *argv)
    assert code == 2
    assert expected in err


def test_camvid_real_frames(capsys, camvid_root, tmp_path):
    out = tmp_path / 'out'
    code, err = run(capsys, 'camvid', '--root', str(camvid_root), '--out', str(out),
                    '--size', '480x360,256x192', '--workers', '2')
    assert code == 0, err
    table = np.zeros(256, np.uint8)
    for camvid_id, category in CAMVID_EXPECTED.items():
        table[camvid_id] = category
    for width, height in ((480, 360), (256, 192)):
        folder = out / f'{width}x{height}'
        raw = json.loads((folder / 'manifest.json').read_text())
        assert set(raw['splits']) == {'train', 'val'}
        assert any('No test split' in note for note in raw['notes'])
        assert 'CC BY-NC 4.0' in raw['licence']
        assert raw['seed'] is None and raw['val_fraction'] is None
        for split in ('train', 'val'):
            stems = sorted(p.stem for p in (camvid_root / split / 'images').glob('*.jpg'))
            assert raw['splits'][split]['ids'] == stems
            freq = dict(zip(CATEGORIES, raw['splits'][split]['class_frequencies'], strict=True))
            assert sum(freq.values()) == pytest.approx(1.0)
            assert min(freq['flat'], freq['construction'], freq['sky']) > freq['human'] > 0
            for stem in stems:
                source = cv2.imread(str(camvid_root / split / 'labels' / f'{stem}.png'),
                                    cv2.IMREAD_UNCHANGED)
                label = read_label(folder / split / 'labels' / f'{stem}.png')
                assert label.shape == (height, width)
                if width == 480:
                    np.testing.assert_array_equal(label, table[source])
                    photo = cv2.imread(str(camvid_root / split / 'images' / f'{stem}.jpg'))
                    image = read_rgb(folder / split / 'images' / f'{stem}.png')
                    np.testing.assert_array_equal(image, photo[..., ::-1])
                else:
                    assert set(np.unique(label)) <= set(np.unique(table[source]))


def test_other_dataset_in_the_same_folder_is_refused(capsys, cityscapes_tree, camvid_root,
                                                     tmp_path):
    out = tmp_path / 'out'
    assert run(capsys, 'camvid', '--root', str(camvid_root), '--out', str(out),
               '--size', '64x48')[0] == 0
    code, err = prepare_cityscapes(capsys, cityscapes_tree, out, '--size', '64x48')
    assert code == 2
    assert 'holds a prepared camvid dataset' in err
    assert read_manifest(out / '64x48').dataset == 'camvid'
