"""Segmentation metrics from a dataset-level confusion matrix (numpy only).

Scores are always computed from one confusion matrix accumulated over every pixel of the
data set, never averaged over batches or images. mIoU follows the Cityscapes convention of
the model contract: mean IoU over the non-void categories, pixels whose truth is void
ignored; the mean over all categories (void as a class) is reported beside it.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """Return the ``(C, C)`` int64 matrix counting pixels; rows = truth, columns = prediction.

    Truth values outside ``0..C-1`` are ignored; predictions must lie inside that range.
    """
    if truth.shape != prediction.shape:
        raise ValueError(f'truth and prediction must have the same shape; got {truth.shape} '
                         f'and {prediction.shape}')
    t = truth.reshape(-1).astype(np.int64)
    p = prediction.reshape(-1).astype(np.int64)
    keep = (t >= 0) & (t < num_classes)
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f'predictions must be class ids in 0..{num_classes - 1}; got '
                         f'{p.min()}..{p.max()}')
    return np.bincount(t[keep] * num_classes + p[keep],
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_iou(cm: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """IoU per class (NaN for a class absent from truth and prediction).

    With ``ignore_index``, pixels whose truth is that class are dropped first, so predicting
    a class on void ground truth is not counted as a false positive.
    """
    cm = _drop_ignored_truth(cm, ignore_index)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(union > 0, tp / union, np.nan)


def per_class_dice(cm: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """Dice (F1) per class, NaN where a class is absent from truth and prediction."""
    cm = _drop_ignored_truth(cm, ignore_index)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def pixel_accuracy(cm: np.ndarray, ignore_index: int | None = None) -> float:
    """Fraction of (non-ignored) pixels whose predicted class is right."""
    cm = _drop_ignored_truth(cm, ignore_index)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float('nan')


def summarize(cm: np.ndarray, categories: list[str] | tuple[str, ...],
              ignore_index: int = 0) -> dict:
    """Return every reported score as plain floats, ready for JSON.

    Keys: ``miou`` (non-void mean, void truth ignored), ``miou_all`` (mean over all classes,
    void included), ``dice`` (non-void mean), ``pixel_accuracy`` (void truth ignored),
    ``iou``/``dice_per_class`` (name -> value or None), ``pixels``.
    """
    iou = per_class_iou(cm, ignore_index)
    dice = per_class_dice(cm, ignore_index)
    iou_all = per_class_iou(cm)
    keep = [i for i in range(len(categories)) if i != ignore_index]
    return {
        'miou': _nanmean(iou[keep]),
        'miou_all': _nanmean(iou_all),
        'dice': _nanmean(dice[keep]),
        'pixel_accuracy': pixel_accuracy(cm, ignore_index),
        'iou': {categories[i]: _clean(iou[i]) for i in keep},
        'iou_all': {n: _clean(v) for n, v in zip(categories, iou_all, strict=True)},
        'dice_per_class': {categories[i]: _clean(dice[i]) for i in keep},
        'pixels': int(cm.sum()),
    }


def _drop_ignored_truth(cm: np.ndarray, ignore_index: int | None) -> np.ndarray:
    if ignore_index is None:
        return cm
    cm = cm.copy()
    cm[ignore_index, :] = 0
    return cm


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float('nan')


def _clean(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
