"""Generate a tiny Cityscapes tree in the official layout, with real Cityscapes label ids.

Every frame is 64x32 pixels made of 8-pixel-aligned blocks, so nearest resizing by 2 or 4
keeps the block fractions exactly. Every frame has the same category layout (the expected
fractions are EXPECTED_FREQUENCIES, counted by hand below) but odd frames use other label ids
of the same categories, so more of the official table is exercised. The red channel of an
image is constant and unique per frame (frame_value), which lets tests tell frames apart after
resizing, shuffling and batching.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 64, 32

# (rows, cols, label id for even frames, label id for odd frames, category id)
BLOCKS = (
    ((0, 8), (0, 64), 23, 23, 5),       # sky
    ((8, 16), (0, 32), 11, 12, 2),      # building / wall -> construction
    ((8, 16), (32, 64), 21, 22, 4),     # vegetation / terrain -> nature
    ((16, 24), (0, 16), 24, 25, 6),     # person / rider -> human
    ((16, 24), (16, 48), 26, 27, 7),    # car / truck -> vehicle
    ((16, 24), (48, 64), 17, 20, 3),    # pole / traffic sign -> object
    ((24, 32), (0, 48), 7, 8, 1),       # road / sidewalk -> flat
    ((24, 32), (48, 56), 1, 4, 0),      # ego vehicle / static -> void
    ((24, 32), (56, 64), 0, 6, 0),      # unlabeled / ground -> void
)

# Pixels per category in one 64x32 frame, by hand from BLOCKS:
# void 8*8+8*8=128, flat 8*48=384, construction 8*32=256, object 8*16=128,
# nature 8*32=256, sky 8*64=512, human 8*16=128, vehicle 8*32=256; total 2048.
EXPECTED_FREQUENCIES = (128 / 2048, 384 / 2048, 256 / 2048, 128 / 2048,
                        256 / 2048, 512 / 2048, 128 / 2048, 256 / 2048)

DEFAULT_FRAMES = {
    'train': {'aachen': 4, 'bochum': 4, 'cologne': 2},
    'val': {'frankfurt': 2, 'lindau': 1},
    'test': {'berlin': 1},
}


def frame_value(index: int) -> int:
    """Return the red value that identifies frame ``index`` (unique for index < 16)."""
    return 10 + 15 * index


def frame_index(red: float) -> int:
    """Return the frame index whose :func:`frame_value` is ``red``."""
    return int(round((red - 10) / 15))


def label_ids(odd: bool) -> np.ndarray:
    """Return the Cityscapes labelIds image (uint8, HEIGHT x WIDTH) of an even or odd frame."""
    label = np.full((HEIGHT, WIDTH), 255, dtype=np.uint8)
    for (r0, r1), (c0, c1), even_id, odd_id, _ in BLOCKS:
        label[r0:r1, c0:c1] = odd_id if odd else even_id
    assert (label != 255).all()
    return label


def categories() -> np.ndarray:
    """Return the expected category image (uint8, HEIGHT x WIDTH) of every frame."""
    out = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    for (r0, r1), (c0, c1), _, _, category in BLOCKS:
        out[r0:r1, c0:c1] = category
    return out


def rgb_image(index: int) -> np.ndarray:
    """Return frame ``index`` as RGB: red = frame_value, green = 30 * category, blue = 200."""
    image = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[..., 0] = frame_value(index)
    image[..., 1] = categories() * 30
    image[..., 2] = 200
    return image


@dataclass(frozen=True)
class CityscapesTree:
    """What :func:`make_cityscapes` wrote: sorted frame ids per official split, red values."""

    root: Path
    ids: dict[str, list[str]]
    values: dict[str, int]


def make_cityscapes(root: Path, frames: dict[str, dict[str, int]] | None = None
                    ) -> CityscapesTree:
    """Write the tree under ``root``: ``frames`` gives {official split: {city: count}}.

    Besides ``*_leftImg8bit.png`` and ``*_gtFine_labelIds.png`` it writes the colour and
    polygon files of the real download, which preparation must ignore.
    """
    frames = DEFAULT_FRAMES if frames is None else frames
    ids: dict[str, list[str]] = {}
    values: dict[str, int] = {}
    index = 0
    for split, cities in frames.items():
        ids[split] = []
        for city, count in cities.items():
            image_dir = root / 'leftImg8bit' / split / city
            label_dir = root / 'gtFine' / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                stem = f'{city}_{n:06d}_{19 + 30 * n:06d}'
                image = rgb_image(index)
                cv2.imwrite(str(image_dir / f'{stem}_leftImg8bit.png'),
                            cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                label = label_ids(odd=index % 2 == 1)
                if split == 'test':
                    label[:] = 0  # the official test labels are all void
                cv2.imwrite(str(label_dir / f'{stem}_gtFine_labelIds.png'), label)
                cv2.imwrite(str(label_dir / f'{stem}_gtFine_color.png'), image)
                (label_dir / f'{stem}_gtFine_polygons.json').write_text('{}')
                ids[split].append(stem)
                values[stem] = frame_value(index)
                index += 1
        ids[split].sort()
    return CityscapesTree(root, ids, values)
