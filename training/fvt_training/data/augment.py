"""Training augmentation: named albumentations presets or a pipeline saved to a file.

Every pipeline transforms the image and its category mask together. Geometric transforms
resample masks with nearest-neighbour interpolation (a linear one would invent categories on
boundaries) and fill uncovered borders of the mask with void, which evaluation ignores.
Rescaling uses the pixel-centred nearest (``NEAREST``): OpenCV's plain INTER_NEAREST resize puts
a mask up to a pixel off its linearly resized image. Warps (rotation, elastic, grid) map
coordinates themselves, so either flag keeps masks on their image there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import albumentations as A  # noqa: N812 - the library's own convention
import cv2

from fvt_segmentation.core.contract import VOID
from fvt_segmentation.core.conversions import NEAREST
from fvt_training.data.prepared import DataError

# Nearest-neighbour flags: the only ones that keep mask values category ids.
MASK_SAFE = (NEAREST, cv2.INTER_NEAREST)
PIPELINE_SUFFIXES = {'.json': 'json', '.yaml': 'yaml', '.yml': 'yaml'}


def _light(height_width: Sequence[int]) -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.OneOf([A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=1.0),
                 A.RandomGamma(gamma_limit=(80, 120), p=1.0)], p=0.8),
    ]


def _flip_rotate(height_width: Sequence[int]) -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.Rotate(limit=15, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=VOID, p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
    ]


def _heavy(height_width: Sequence[int]) -> list[A.BasicTransform]:
    geometric = dict(mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT,
                     fill=0, fill_mask=VOID, p=1.0)
    return [
        A.HorizontalFlip(p=0.5),
        # alpha 120, sigma 6 on uniform noise: the classic setting, displacements of about
        # 3 pixels that vary smoothly over about 20 pixels.
        A.OneOf([A.ElasticTransform(alpha=120, sigma=6, noise_distribution='uniform',
                                    **geometric),
                 A.GridDistortion(num_steps=5, distort_limit=0.3, **geometric)], p=0.5),
        A.OneOf([A.Emboss(alpha=(0.2, 0.5), strength=(0.2, 0.7), p=1.0),
                 A.Blur(blur_limit=(3, 5), p=1.0)], p=0.3),
        A.RandomGamma(gamma_limit=(80, 120), p=0.5),
    ]


def _rescale_and_crop(height_width: Sequence[int]) -> list[A.BasicTransform]:
    # Objects at other distances: scale 0.75-1.5, then a crop back to the input size, void
    # where a smaller image leaves a border.
    height, width = (int(v) for v in height_width)
    return [
        A.RandomScale(scale_limit=(-0.25, 0.5), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=NEAREST, p=1.0),
        A.PadIfNeeded(min_height=height, min_width=width, border_mode=cv2.BORDER_CONSTANT,
                      fill=0, fill_mask=VOID),
        A.RandomCrop(height=height, width=width),
    ]


def _scale_crop(height_width: Sequence[int]) -> list[A.BasicTransform]:
    # For pretrained encoders: the rescaling plus the light preset.
    return [*_rescale_and_crop(height_width), *_light(height_width)]


def _street(height_width: Sequence[int]) -> list[A.BasicTransform]:
    # For streets and light the training sequences lack (dusk, overcast, a cheaper sensor):
    # scale_crop's geometry, wider exposure and colour changes, and now and then the blur and
    # noise of a moving car's camera. No geometric distortion: it hurt in the ablation.
    return [
        *_rescale_and_crop(height_width),
        A.HorizontalFlip(p=0.5),
        A.OneOf([A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=1.0),
                 A.RandomGamma(gamma_limit=(60, 150), p=1.0)], p=0.8),
        A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=25, val_shift_limit=0, p=0.5),
        A.OneOf([A.MotionBlur(blur_limit=(3, 5), p=1.0),
                 A.GaussianBlur(blur_limit=(3, 5), p=1.0),
                 A.GaussNoise(std_range=(0.02, 0.06), p=1.0)], p=0.3),
    ]


PRESETS: dict[str, Callable[[Sequence[int]], list[A.BasicTransform]] | None] = {
    'none': None,
    'light': _light,
    'flip_rotate': _flip_rotate,
    'heavy': _heavy,
    'scale_crop': _scale_crop,
    'street': _street,
}
"""Named augmentations, each a factory of the input ``(height, width)``; ``none`` means no
augmentation (``build_augmentation`` gives None)."""


class AugmentationError(DataError):
    """An augmentation spec that names no preset or no usable pipeline file."""


def _walk(transform: A.BasicTransform) -> Iterator[A.BasicTransform]:
    yield transform
    for child in getattr(transform, 'transforms', ()):
        yield from _walk(child)


def check_mask_safe(pipeline: A.BaseCompose, source: str) -> None:
    """Refuse a pipeline whose geometric transforms interpolate masks other than nearest."""
    for transform in _walk(pipeline):
        # None (Compose's default) means "leave each transform's own setting".
        interpolation = getattr(transform, 'mask_interpolation', None)
        if interpolation is not None and interpolation not in MASK_SAFE:
            raise AugmentationError(
                f'{source}: {type(transform).__name__} resamples masks with interpolation '
                f'{interpolation}; masks need mask_interpolation={NEAREST} '
                f'(cv2.INTER_NEAREST_EXACT) or {cv2.INTER_NEAREST} (cv2.INTER_NEAREST), or '
                'category boundaries get invented ids')


def _load_pipeline(path: Path) -> A.Compose:
    data_format = PIPELINE_SUFFIXES.get(path.suffix.lower())
    if data_format is None:
        raise AugmentationError(f'{path}: expected a .json, .yaml or .yml file written by '
                                'albumentations.save(pipeline, path, data_format=...)')
    if not path.is_file():
        raise AugmentationError(f'{path}: augmentation pipeline file not found')
    try:
        loaded = A.load(str(path), data_format=data_format)
    except Exception as err:  # albumentations raises many kinds of error on bad input
        raise AugmentationError(
            f'{path}: not a pipeline that albumentations.load can read '
            f'({type(err).__name__}: {err})') from None
    if not isinstance(loaded, A.BaseCompose):
        loaded = A.Compose([loaded])
    check_mask_safe(loaded, str(path))
    return loaded


def build_augmentation(spec: str | None, height_width: Sequence[int]) -> A.Compose | None:
    """Return the augmentation pipeline for a preset name or a serialised pipeline file.

    ``spec`` is one of :data:`PRESETS` (``none`` and ``None`` give no augmentation) or a path
    to a JSON/YAML file written by ``albumentations.save`` (the ``A.to_dict`` form);
    ``height_width`` is the ``(height, width)`` every output must keep.
    """
    if spec is None:
        return None
    if spec in PRESETS:
        factory = PRESETS[spec]
        return None if factory is None else A.Compose(factory(height_width))
    path = Path(spec)
    if path.suffix.lower() in PIPELINE_SUFFIXES or path.exists():
        return _load_pipeline(path)
    raise AugmentationError(
        f'unknown augmentation {spec!r}; expected one of {", ".join(PRESETS)} or a path to a '
        '.json/.yaml pipeline saved with albumentations.save')
