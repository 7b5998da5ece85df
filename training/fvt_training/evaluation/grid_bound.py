"""How much a decoder's output stride alone costs: a perfect classifier on a coarse grid.

A network such as ``light_fpn`` scores classes on a grid ``stride`` times coarser than its
input and upsamples the scores bilinearly. Even a perfect classifier on that grid cannot draw
a pole narrower than a cell. :func:`grid_bound_confusion` measures that ceiling on real
labels: each label map is scaled to the network's input size as one-hot scores, averaged over
the cells of the grid (the best a cell can say about its pixels), upsampled back bilinearly,
argmaxed and scored at the label size the way ``fvt-train evaluate`` scores a model (label and
class maps resized with ``resize_nearest``). A score far above a model's means the grid is not
what limits it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fvt_segmentation.core.contract import CATEGORIES
from fvt_segmentation.core.conversions import resize_nearest
from fvt_segmentation.core.metrics import confusion_matrix
from fvt_training.data.prepared import Manifest, load_pair


def grid_scores(labels: np.ndarray, input_size: tuple[int, int], stride: int) -> np.ndarray:
    """Return the one-hot scores of ``labels`` seen through a grid, at ``input_size``.

    ``labels`` are category ids ``[H, W]``; ``input_size`` is the network's ``(h, w)``, both
    divisible by ``stride``. The result ``[h, w, C]`` is the area mean of the one-hot map over
    each grid cell, bilinearly upsampled back to ``input_size``.
    """
    height, width = input_size
    if stride < 1 or height % stride or width % stride:
        raise ValueError(f'input size {width}x{height} must be divisible by the stride; got '
                         f'stride {stride}')
    scaled = np.eye(len(CATEGORIES), dtype=np.float32)[resize_nearest(labels, input_size)]
    cells = scaled.reshape(height // stride, stride, width // stride, stride, -1).mean((1, 3))
    return cv2.resize(cells, (width, height), interpolation=cv2.INTER_LINEAR)


def grid_bound_confusion(labels: Sequence[np.ndarray], input_size: tuple[int, int],
                         stride: int) -> np.ndarray:
    """Confusion matrix (rows = truth) of the perfect grid classifier over ``labels``."""
    num_classes = len(CATEGORIES)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for truth in labels:
        classes = grid_scores(truth, input_size, stride).argmax(-1).astype(np.uint8)
        cm += confusion_matrix(truth, resize_nearest(classes, truth.shape), num_classes)
    return cm


def split_labels(manifest: Manifest, split: str) -> list[np.ndarray]:
    """Read every label map of ``split`` from a prepared folder's manifest."""
    return [load_pair(manifest, split, sample_id)[1] for sample_id in manifest.ids(split)]
