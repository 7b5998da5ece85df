"""Where a model misses a category: along its edges or inside it, in small parts or large ones.

An IoU says how many pixels of a category are missed, not which. Two kinds of miss call for
different levers: pixels lost in a thin band along the category's edges (a coarse decoder, a
blurred boundary: finer stages, boundary-aware losses) and parts missed whole (a pole never
seen: more examples of it per step). :func:`tally_misses` counts, for one label map and its
predicted class map, the category's pixels in the edge band and inside it and the found share
of each connected part; :func:`summarize_misses` turns the tally of a split into recalls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import cv2
import numpy as np

MISSED_BELOW = 0.2  # a part with a smaller found share is missed whole


@dataclass
class MissTally:
    """Pixel counts of one category over any number of label maps (the inside is the rest)."""

    band_pixels: int = 0
    band_found: int = 0
    inner_found: int = 0
    part_pixels: list[int] = field(default_factory=list)
    part_found: list[int] = field(default_factory=list)


def tally_misses(truth: np.ndarray, prediction: np.ndarray, category: int, band: int = 2,
                 tally: MissTally | None = None) -> MissTally:
    """Add one map pair to ``tally`` (a new one if None) and return it.

    ``truth`` and ``prediction`` are category ids of the same ``[H, W]`` shape. A pixel of
    ``category`` is in the edge band when a pixel of another category (void included) lies
    within ``band`` pixels of it (a square neighbourhood); the image border is no edge. Parts are
    8-connected regions of ``category`` in ``truth``.
    """
    if truth.shape != prediction.shape:
        raise ValueError(f'truth and prediction must have the same shape; got {truth.shape} '
                         f'and {prediction.shape}')
    if band < 1:
        raise ValueError(f'band must be >= 1 pixel; got {band}')
    tally = tally or MissTally()
    mask = (truth == category).astype(np.uint8)
    found = prediction == category
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    inner = cv2.erode(mask, kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
    edge = mask.astype(bool) & ~inner
    tally.band_pixels += int(edge.sum())
    tally.band_found += int((edge & found).sum())
    tally.inner_found += int((inner & found).sum())
    count, parts = cv2.connectedComponents(mask, connectivity=8)
    if count > 1:
        tally.part_pixels += np.bincount(parts.ravel(), minlength=count)[1:].tolist()
        tally.part_found += np.bincount(parts[found].ravel(), minlength=count)[1:].tolist()
    return tally


def summarize_misses(tally: MissTally, part_sizes: Sequence[int] = (200, 2000),
                     missed_below: float = MISSED_BELOW) -> dict:
    """Return the recalls of a tally: edge band, inside, parts missed whole, parts by size.

    ``part_sizes`` are the pixel counts that bound the size classes of parts; a part is
    missed whole when less than ``missed_below`` of its pixels are found. Shares are of the
    category's pixels; a recall without pixels is None.
    """
    pixels = np.asarray(tally.part_pixels, np.int64)
    found = np.asarray(tally.part_found, np.int64)
    total = int(pixels.sum())

    def ratio(num: float, den: float) -> float | None:
        return float(num) / den if den else None

    missed = found < missed_below * pixels
    bounds = [0, *part_sizes, None]
    by_size = []
    for low, high in pairwise(bounds):
        chosen = (pixels >= low) & (pixels < high if high is not None else True)
        by_size.append({'min_pixels': low, 'max_pixels': high, 'parts': int(chosen.sum()),
                        'pixel_share': ratio(pixels[chosen].sum(), total),
                        'recall': ratio(found[chosen].sum(), pixels[chosen].sum())})
    return {
        'pixels': total,
        'band_share': ratio(tally.band_pixels, total),
        'inner_share': ratio(total - tally.band_pixels, total),
        'band_recall': ratio(tally.band_found, tally.band_pixels),
        'inner_recall': ratio(tally.inner_found, total - tally.band_pixels),
        'parts': len(pixels),
        'parts_missed_whole': int(missed.sum()),
        'missed_whole_pixel_share': ratio(pixels[missed].sum(), total),
        'by_size': by_size,
    }
