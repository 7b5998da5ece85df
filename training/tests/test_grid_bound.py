"""The ceiling a decoder's output stride puts on IoU, on hand-made label maps."""

from __future__ import annotations

import numpy as np
import pytest

from fvt_segmentation.core.contract import CATEGORIES
from fvt_segmentation.core.metrics import per_class_iou
from fvt_training.evaluation.grid_bound import grid_bound_confusion, grid_scores

CONSTRUCTION, OBJECT = CATEGORIES.index('construction'), CATEGORIES.index('object')


def facade_with_pole(width: int, left: int = 16) -> np.ndarray:
    """A 32x48 facade with a pole ``width`` pixels wide from column ``left``."""
    labels = np.full((32, 48), CONSTRUCTION, np.uint8)
    labels[:, left:left + width] = OBJECT
    return labels


def object_iou(labels: np.ndarray, input_size: tuple[int, int], stride: int) -> float:
    return per_class_iou(grid_bound_confusion([labels], input_size, stride))[OBJECT]


def test_a_grid_as_fine_as_the_labels_loses_nothing():
    labels = facade_with_pole(1)
    assert object_iou(labels, (32, 48), 1) == 1.0
    # scaled up by 4/3 for the network and back: pixel-centred resizes keep every pixel
    assert object_iou(labels, (48, 64), 1) == 1.0


def test_a_pole_narrower_than_half_a_cell_vanishes_and_one_cell_wide_survives():
    # stride 4: a 1-pixel pole is a quarter of its cell's area, the facade three quarters
    assert object_iou(facade_with_pole(1), (32, 48), 4) == 0.0
    # a 4-pixel pole filling whole cells: the cell scores 1 for object, its neighbours 0, and
    # bilinear upsampling keeps object above facade within half a cell of the cell's centre
    assert object_iou(facade_with_pole(4), (32, 48), 4) == 1.0
    # 3 pixels across a cell border (columns 15-17): cells hold 1/4 and 2/4 of it, so no
    # pixel is called object
    assert object_iou(facade_with_pole(3, left=15), (32, 48), 4) == 0.0


def test_grid_scores_average_each_cell_and_upsample_bilinearly():
    scores = grid_scores(facade_with_pole(2, left=16), (32, 48), 4)
    assert scores.shape == (32, 48, len(CATEGORIES))
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-6)
    # The pole's cell (columns 16-19) averages 2/4 object, its neighbours 0. Upsampled, pixel
    # centres lie 1/8, 3/8, 5/8 and 7/8 of a cell from a cell centre: 1/16 ... 7/16.
    assert scores[10, 14:22, OBJECT] == pytest.approx(np.array([1, 3, 5, 7, 7, 5, 3, 1]) / 16)
    with pytest.raises(ValueError, match='divisible by the stride'):
        grid_scores(facade_with_pole(2), (30, 48), 4)
