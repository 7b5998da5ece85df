"""Where a category is missed, on hand-made label and class maps."""

from __future__ import annotations

import numpy as np
import pytest

from fvt_segmentation.core.contract import CATEGORIES
from fvt_training.evaluation.miss_regions import summarize_misses, tally_misses

CONSTRUCTION, OBJECT = CATEGORIES.index('construction'), CATEGORIES.index('object')


def facade(height: int = 10, width: int = 12) -> np.ndarray:
    return np.full((height, width), CONSTRUCTION, np.uint8)


def test_a_pole_found_only_inside_has_its_edge_band_missed():
    truth = facade()
    truth[:, 3:7] = OBJECT  # a pole 4 px wide over the full height
    prediction = facade()
    prediction[:, 4:6] = OBJECT  # its two inner columns found
    s = summarize_misses(tally_misses(truth, prediction, OBJECT, band=1))
    # columns 3 and 6 touch the facade; the top and bottom rows touch only the image border
    assert (s['pixels'], s['band_share']) == (40, 0.5)
    assert (s['band_recall'], s['inner_recall']) == (0.0, 1.0)
    assert (s['parts'], s['parts_missed_whole']) == (1, 0)


def test_a_wider_band_takes_pixels_from_the_inside():
    truth = facade()
    truth[:, 2:8] = OBJECT  # 6 px wide: band 1 leaves 4 columns inside, band 2 leaves 2
    prediction = truth.copy()
    assert summarize_misses(tally_misses(truth, prediction, OBJECT, band=1))['band_share'] \
        == pytest.approx(2 / 6)
    assert summarize_misses(tally_misses(truth, prediction, OBJECT, band=2))['band_share'] \
        == pytest.approx(4 / 6)


def test_parts_missed_whole_are_counted_by_size_over_several_maps():
    truth_a, truth_b = facade(), facade()
    truth_a[1:3, 1:3] = OBJECT     # a sign of 4 px, missed
    truth_a[5:10, 5:12] = OBJECT   # a fence of 35 px, 21 found
    truth_b[0:2, 0:1] = OBJECT     # a post of 2 px, found
    truth_b[5:7, 0:10] = OBJECT    # a barrier of 20 px, 2 found: under 20 %, missed whole
    pred_a, pred_b = facade(), facade()
    pred_a[5:8, 5:12] = OBJECT
    pred_b[0:2, 0:1] = OBJECT
    pred_b[5, 0:2] = OBJECT
    tally = tally_misses(truth_a, pred_a, OBJECT, band=1)
    tally = tally_misses(truth_b, pred_b, OBJECT, band=1, tally=tally)
    s = summarize_misses(tally, part_sizes=(10,))
    assert (s['pixels'], s['parts'], s['parts_missed_whole']) == (61, 4, 2)
    assert s['missed_whole_pixel_share'] == pytest.approx((4 + 20) / 61)
    small, large = s['by_size']
    assert (small['parts'], small['recall']) == (2, pytest.approx(2 / 6))
    assert (large['parts'], large['recall']) == (2, pytest.approx((21 + 2) / 55))


def test_a_category_absent_from_the_labels_has_no_recall():
    s = summarize_misses(tally_misses(facade(), facade(), OBJECT))
    assert (s['pixels'], s['band_recall'], s['inner_recall'], s['parts']) == (0, None, None, 0)


@pytest.mark.parametrize('prediction, band, expected', [
    (np.zeros((4, 5), np.uint8), 2, 'same shape'),
    (np.zeros((4, 4), np.uint8), 0, 'band must be >= 1'),
])
def test_bad_input_is_refused_with_what_was_expected(prediction, band, expected):
    with pytest.raises(ValueError, match=expected):
        tally_misses(np.zeros((4, 4), np.uint8), prediction, OBJECT, band)
