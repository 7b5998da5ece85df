"""Augmentation presets and saved pipelines: image and mask move together, masks stay ids."""

from __future__ import annotations

import random

import albumentations as A  # noqa: N812
import cv2
import numpy as np
import pytest

from fvt_training.data.augment import PRESETS, AugmentationError, build_augmentation

AUGMENTING = ('light', 'flip_rotate', 'heavy', 'scale_crop', 'street')
SCENE_SIZE = (128, 192)  # height, width of block_scene()
# Lowest image/mask agreement (correlation ratio, see below) each preset must keep. Emboss
# and blur in `heavy` change intensities near every block edge, so it is allowed less; a
# mask flipped against its image scores about 0.02. Linear image resampling in `scale_crop`
# blurs the edges of the 8x8 blocks (about 0.82 at worst).
MIN_AGREEMENT = {'light': 0.9, 'flip_rotate': 0.9, 'heavy': 0.35, 'scale_crop': 0.75,
                 'street': 0.75}


def block_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random 8x8 blocks of categories 1 and 7; image grey level = 40 + 25 * category.

    Linear interpolation of such a mask would create ids 2..6 on block edges.
    """
    blocks = np.random.default_rng(seed).choice(np.array([1, 7], np.uint8), (16, 24))
    mask = np.kron(blocks, np.ones((8, 8), np.uint8))
    image = np.repeat((40 + 25 * mask)[..., None], 3, axis=2).astype(np.uint8)
    return image, mask


def agreement(image: np.ndarray, mask: np.ndarray) -> float:
    """Correlation ratio: share of image intensity variance explained by the mask's ids.

    Near 1 when every mask region has its own uniform intensity (whatever monotone
    brightness change was applied); near 0 when mask and image are misaligned.
    """
    valid = mask > 0
    values, groups = image.mean(axis=2)[valid].astype(np.float64), mask[valid]
    total = ((values - values.mean()) ** 2).sum()
    within = sum(((values[groups == g] - values[groups == g].mean()) ** 2).sum()
                 for g in np.unique(groups))
    return 1.0 - within / total


def apply(pipeline: A.BaseCompose, seed: int, image: np.ndarray,
          mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = pipeline(image=image, mask=mask)
    return out['image'], out['mask']


def test_presets():
    assert set(PRESETS) == {'none', 'light', 'flip_rotate', 'heavy', 'scale_crop', 'street'}
    assert build_augmentation('none', SCENE_SIZE) is None
    assert build_augmentation(None, SCENE_SIZE) is None
    for name in AUGMENTING:
        assert isinstance(build_augmentation(name, SCENE_SIZE), A.Compose)


def test_agreement_detects_a_misaligned_mask():
    image, mask = block_scene()
    assert agreement(image, mask) == pytest.approx(1.0)
    assert agreement(image[:, ::-1], mask) < 0.1


@pytest.mark.parametrize('name', AUGMENTING)
def test_image_and_mask_are_transformed_together(name):
    image, mask = block_scene()
    pipeline = build_augmentation(name, SCENE_SIZE)
    changed = 0
    for seed in range(25):
        out_image, out_mask = apply(pipeline, seed, image, mask)
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
        assert out_mask.dtype == np.uint8
        # nearest interpolation: no id appears that was not there (void 0 only as fill)
        assert set(np.unique(out_mask)) <= set(np.unique(mask)) | {0}
        assert agreement(out_image, out_mask) >= MIN_AGREEMENT[name]
        changed += not np.array_equal(out_image, image)
    assert changed >= 10


def test_rotation_fills_the_mask_border_with_void():
    image = np.full((64, 96, 3), 120, np.uint8)
    mask = np.full((64, 96), 3, np.uint8)
    pipeline = build_augmentation('flip_rotate', (64, 96))
    rotated = 0
    for seed in range(20):
        out_image, out_mask = apply(pipeline, seed, image, mask)
        assert set(np.unique(out_mask)) <= {0, 3}
        if (out_mask == 0).any():
            rotated += 1
            # the uncovered corners are void in the mask and filled black in the image (a
            # later brightness change may lift the black, never above the grey content)
            assert out_mask[0, 0] == 0 and out_mask[-1, -1] == 0
            assert (out_image[0, 0] < out_image[32, 48]).all()
    assert 3 <= rotated <= 17


@pytest.mark.parametrize('suffix, data_format', [('.yaml', 'yaml'), ('.json', 'json')])
def test_saved_pipeline_round_trips(tmp_path, suffix, data_format):
    pipeline = A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), rotate=(-5, 5), border_mode=cv2.BORDER_CONSTANT,
                 fill_mask=0, p=1.0),
        A.RandomBrightnessContrast(p=0.5),
    ])
    path = tmp_path / f'pipeline{suffix}'
    A.save(pipeline, str(path), data_format=data_format)
    loaded = build_augmentation(str(path), SCENE_SIZE)
    assert A.to_dict(loaded) == A.to_dict(pipeline)
    image, mask = block_scene()
    for seed in range(3):
        expected = apply(pipeline, seed, image, mask)
        got = apply(loaded, seed, image, mask)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_saved_pipeline_with_linear_mask_interpolation_is_refused(tmp_path):
    path = tmp_path / 'bad.json'
    A.save(A.Compose([A.OneOf([A.Rotate(limit=10, mask_interpolation=cv2.INTER_LINEAR)])]),
           str(path))
    with pytest.raises(AugmentationError, match=r'bad\.json: Rotate resamples masks with '
                                                r'interpolation 1'):
        build_augmentation(str(path), SCENE_SIZE)


def test_saved_pipeline_with_either_nearest_mask_interpolation_is_accepted(tmp_path):
    for flag in (cv2.INTER_NEAREST_EXACT, cv2.INTER_NEAREST):
        path = tmp_path / f'nearest{flag}.json'
        A.save(A.Compose([A.RandomScale(scale_limit=0.2, mask_interpolation=flag)]), str(path))
        assert isinstance(build_augmentation(str(path), SCENE_SIZE), A.Compose)


def test_bad_specs_are_explained(tmp_path):
    with pytest.raises(AugmentationError,
                       match="unknown augmentation 'hevy'; expected one of none, light, "
                             'flip_rotate, heavy, scale_crop, street or a path'):
        build_augmentation('hevy', SCENE_SIZE)
    with pytest.raises(AugmentationError, match='missing.yaml: augmentation pipeline file not'):
        build_augmentation(str(tmp_path / 'missing.yaml'), SCENE_SIZE)
    broken = tmp_path / 'broken.yaml'
    broken.write_text('transform: [1, 2')
    with pytest.raises(AugmentationError, match='broken.yaml: not a pipeline that '
                                                'albumentations.load can read'):
        build_augmentation(str(broken), SCENE_SIZE)


def test_scale_crop_rescales_and_keeps_the_size():
    """Scale 0.75-1.5 then a crop back: a block's side varies, smaller images get void borders."""
    image = np.full((64, 96, 3), 120, np.uint8)
    mask = np.zeros((64, 96), np.uint8)
    mask[16:48, 32:64] = 7  # a 32x32 square
    image[mask == 7] = 200
    pipeline = build_augmentation('scale_crop', (64, 96))
    sides, padded = [], 0
    for seed in range(30):
        out_image, out_mask = apply(pipeline, seed, image, mask)
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
        rows = np.flatnonzero((out_mask == 7).any(axis=1))
        if rows.size and 0 < rows[0] and rows[-1] < 63:  # the square is whole vertically
            sides.append(rows.size)
        padded += bool((out_mask[0] == 0).all() or (out_mask[-1] == 0).all())
    assert min(sides) <= 27 and max(sides) >= 38  # 0.75 * 32 = 24 ... 1.5 * 32 = 48
    assert padded >= 3



@pytest.mark.parametrize('name', ['scale_crop', 'street'])
def test_rescaled_masks_stay_on_their_image(name):
    # Each pixel holds its column. After the preset's rescaling, a mask value says which
    # source column the pixel came from and the linearly resampled image where the pixel's
    # centre lies: nearest keeps them within half a pixel. OpenCV's plain INTER_NEAREST
    # resize put masks up to a pixel left of their image, by an amount depending on the scale.
    columns = np.tile(np.arange(200, dtype=np.float32), (40, 1))
    image, mask = np.repeat(columns[..., None], 3, axis=2), columns.astype(np.uint8)
    (rescale,) = [t for t in build_augmentation(name, (40, 200)).transforms
                  if isinstance(t, A.RandomScale)]
    offsets = []
    for seed in range(20):
        rescale.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = rescale(image=image, mask=mask)
        offsets.append(out['mask'][:, 4:-4] - out['image'][:, 4:-4, 0])
    offsets = np.concatenate([o.ravel() for o in offsets])
    assert abs(offsets.mean()) < 0.05 and np.abs(offsets).max() <= 0.5 + 1e-3
