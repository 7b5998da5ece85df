import math

import numpy as np
import pytest

from fvt_segmentation.core.contract import CATEGORIES
from fvt_segmentation.core.metrics import (
    confusion_matrix,
    per_class_dice,
    per_class_iou,
    pixel_accuracy,
    summarize,
)


def test_confusion_matrix_counts_by_hand():
    truth = np.array([[0, 1, 1], [2, 2, 1]])
    pred = np.array([[0, 1, 2], [2, 2, 1]])
    cm = confusion_matrix(truth, pred, 3)
    assert cm.tolist() == [[1, 0, 0], [0, 2, 1], [0, 0, 2]]


def test_out_of_range_truth_is_ignored_and_bad_prediction_rejected():
    assert confusion_matrix(np.array([255, 1]), np.array([0, 1]), 2).sum() == 1
    with pytest.raises(ValueError, match='class ids in 0..1'):
        confusion_matrix(np.array([0]), np.array([2]), 2)
    with pytest.raises(ValueError, match='same shape'):
        confusion_matrix(np.zeros(2), np.zeros(3), 2)


def test_iou_dice_accuracy_by_hand():
    # class 1: tp 2, fp 0, fn 1 -> IoU 2/3, Dice 4/5; class 2: tp 2, fp 1, fn 0 -> IoU 2/3
    cm = np.array([[1, 0, 0], [0, 2, 1], [0, 0, 2]])
    assert np.allclose(per_class_iou(cm), [1, 2 / 3, 2 / 3])
    assert np.allclose(per_class_dice(cm), [1, 0.8, 0.8])
    assert pixel_accuracy(cm) == pytest.approx(5 / 6)


def test_void_truth_is_ignored_but_void_predictions_count_as_misses():
    # truth void (0) predicted as 1: ignored; truth 1 predicted void: a miss for class 1
    truth = np.array([0, 0, 1, 1])
    pred = np.array([1, 1, 0, 1])
    cm = confusion_matrix(truth, pred, 2)
    iou = per_class_iou(cm, ignore_index=0)
    assert iou[1] == pytest.approx(0.5)
    assert per_class_iou(cm)[1] == pytest.approx(1 / 4)
    assert pixel_accuracy(cm, ignore_index=0) == pytest.approx(0.5)


def test_summary_is_dataset_level_and_skips_absent_classes():
    truth = np.zeros((4, 4), np.uint8)
    truth[:2] = 1
    truth[2:, :2] = 5
    pred = truth.copy()
    pred[3, 0] = 7
    s = summarize(confusion_matrix(truth, pred, 8), CATEGORIES)
    assert s['iou']['flat'] == 1.0
    assert s['iou']['sky'] == pytest.approx(3 / 4)
    assert s['iou']['vehicle'] == 0.0
    assert s['iou']['human'] is None
    assert s['miou'] == pytest.approx((1 + 0.75 + 0) / 3)
    assert 'void' not in s['iou'] and s['iou_all']['void'] == 1.0
    assert s['miou_all'] == pytest.approx((1 + 1 + 0.75 + 0) / 4)
    assert s['pixels'] == 16 and not math.isnan(s['dice'])
