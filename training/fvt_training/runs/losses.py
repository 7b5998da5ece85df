"""Segmentation losses: maths as plain functions, thin composable ``keras.losses.Loss`` classes.

Every function takes one-hot ``y_true`` and softmax ``y_pred`` of shape ``[B, H, W, C]`` and
returns a scalar. Region losses (Dice, Jaccard) count pixels over the whole batch, per class,
then average the classes (weighted by ``class_weights`` when given: ``sum(w*s) / sum(w)``).
Losses compose: ``CategoricalCrossentropy() + 2.0 * DiceLoss()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from fvt_training.runs.config_schema import LOSS_NAMES

EPSILON = 1e-7
SMOOTH = 1e-5


def _weights(class_weights: Sequence[float] | None, num_classes: int) -> tf.Tensor:
    if class_weights is None:
        return tf.ones([num_classes], tf.float32)
    return tf.constant(class_weights, tf.float32)


def _class_mean(scores: tf.Tensor, class_weights: Sequence[float] | None) -> tf.Tensor:
    w = _weights(class_weights, scores.shape[-1])
    return tf.reduce_sum(scores * w) / tf.reduce_sum(w)


def _counts(y_true: tf.Tensor, y_pred: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Return soft per-class ``(tp, fp, fn)`` summed over batch and pixels."""
    y_true = tf.cast(y_true, y_pred.dtype)
    axes = list(range(len(y_pred.shape) - 1))
    tp = tf.reduce_sum(y_true * y_pred, axis=axes)
    fp = tf.reduce_sum(y_pred, axis=axes) - tp
    fn = tf.reduce_sum(y_true, axis=axes) - tp
    return tp, fp, fn


def edge_pixels(y_true: tf.Tensor, width: int) -> tf.Tensor:
    """Return 1.0 where another category lies within ``width`` pixels, else 0.0: ``[B, H, W]``.

    The neighbourhood is a square; the image border is no edge (as in
    :mod:`fvt_training.evaluation.miss_regions`, which measures where such pixels are missed).
    """
    if width < 1:
        raise ValueError(f'edge width must be >= 1 pixel; got {width}')
    y_true = tf.cast(y_true, tf.float32)
    nearby = tf.nn.max_pool2d(y_true, 2 * width + 1, 1, 'SAME')
    return tf.cast(tf.reduce_max(nearby - y_true, axis=-1) > 0.0, tf.float32)


def categorical_crossentropy(y_true: tf.Tensor, y_pred: tf.Tensor,
                             class_weights: Sequence[float] | None = None,
                             hard_fraction: float = 1.0, edge_weight: float = 0.0,
                             edge_width: int = 2) -> tf.Tensor:
    """Mean over pixels of ``-sum_c w_c * t_c * log(p_c)`` (``w`` = 1 without weights).

    ``hard_fraction`` < 1 averages only the ``ceil(hard_fraction * pixels)`` largest pixel
    losses of the batch (online hard example mining): the easy road and sky pixels that
    dominate a street scene then stop diluting the gradient of thin, rare ones.
    ``edge_weight`` > 0 multiplies the loss of pixels within ``edge_width`` pixels of another
    category by ``1 + edge_weight``: a pole is mostly edge, and its edges are where a model
    trained on the plain mean loses it.
    """
    if not 0.0 < hard_fraction <= 1.0:
        raise ValueError(f'hard_fraction must be in (0, 1]; got {hard_fraction}')
    if edge_weight < 0.0:
        raise ValueError(f'edge_weight must be >= 0; got {edge_weight}')
    y_true = tf.cast(y_true, y_pred.dtype)
    w = _weights(class_weights, y_pred.shape[-1])
    p = tf.clip_by_value(y_pred, EPSILON, 1.0 - EPSILON)
    per_pixel = -tf.reduce_sum(w * y_true * tf.math.log(p), axis=-1)
    if edge_weight:
        per_pixel *= 1.0 + edge_weight * tf.cast(edge_pixels(y_true, edge_width), p.dtype)
    if hard_fraction == 1.0:
        return tf.reduce_mean(per_pixel)
    flat = tf.reshape(per_pixel, [-1])
    kept = tf.maximum(1, tf.cast(tf.math.ceil(
        hard_fraction * tf.cast(tf.size(flat), tf.float32)), tf.int32))
    return tf.reduce_mean(tf.math.top_k(flat, k=kept, sorted=False).values)


def dice_loss(y_true: tf.Tensor, y_pred: tf.Tensor,
              class_weights: Sequence[float] | None = None, smooth: float = SMOOTH) -> tf.Tensor:
    """``1 - mean_c (2 tp_c + s) / (2 tp_c + fp_c + fn_c + s)`` over the batch's pixels."""
    tp, fp, fn = _counts(y_true, y_pred)
    dice = (2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth)
    return 1.0 - _class_mean(dice, class_weights)


def jaccard_loss(y_true: tf.Tensor, y_pred: tf.Tensor,
                 class_weights: Sequence[float] | None = None,
                 smooth: float = SMOOTH) -> tf.Tensor:
    """``1 - mean_c (tp_c + s) / (tp_c + fp_c + fn_c + s)`` (soft IoU) over the batch's pixels."""
    tp, fp, fn = _counts(y_true, y_pred)
    iou = (tp + smooth) / (tp + fp + fn + smooth)
    return 1.0 - _class_mean(iou, class_weights)


def focal_loss(y_true: tf.Tensor, y_pred: tf.Tensor, alpha: float = 0.25,
               gamma: float = 2.0) -> tf.Tensor:
    """Mean over pixels of ``-sum_c alpha * t_c * (1 - p_c)^gamma * log(p_c)``."""
    y_true = tf.cast(y_true, y_pred.dtype)
    p = tf.clip_by_value(y_pred, EPSILON, 1.0 - EPSILON)
    per_class = -alpha * y_true * tf.pow(1.0 - p, gamma) * tf.math.log(p)
    return tf.reduce_mean(tf.reduce_sum(per_class, axis=-1))


class SegmentationLoss(tf.keras.losses.Loss):
    """Base of the thin loss classes: returns the scalar of a plain function; composable."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, reduction=tf.keras.losses.Reduction.SUM_OVER_BATCH_SIZE)

    def __add__(self, other: SegmentationLoss) -> SegmentationLoss:
        return SumLoss([(1.0, self), (1.0, other)])

    def __mul__(self, factor: float) -> SegmentationLoss:
        return SumLoss([(float(factor), self)])

    __rmul__ = __mul__


class SumLoss(SegmentationLoss):
    """Weighted sum of losses (what ``+`` and ``*`` build)."""

    def __init__(self, terms: Sequence[tuple[float, SegmentationLoss]]) -> None:
        flat: list[tuple[float, SegmentationLoss]] = []
        for factor, loss in terms:
            if isinstance(loss, SumLoss):
                flat.extend((factor * f, inner) for f, inner in loss.terms)
            else:
                flat.append((factor, loss))
        self.terms = flat
        super().__init__('_plus_'.join(loss.name for _, loss in flat))

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Return the weighted sum of the terms."""
        return tf.add_n([factor * loss.call(y_true, y_pred) for factor, loss in self.terms])


class WeightedLoss(SegmentationLoss):
    """A loss class around a plain function of ``(y_true, y_pred, class_weights, **options)``.

    Subclasses set :attr:`function` and their default name; the options (e.g. ``smooth``)
    are passed on as keyword arguments.
    """

    function: Callable[..., tf.Tensor]

    def __init__(self, class_weights: Sequence[float] | None, name: str,
                 **options: float | int) -> None:
        super().__init__(name)
        self.class_weights = None if class_weights is None else list(class_weights)
        self.options = options

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Return :attr:`function` of the batch with this loss' weights and options."""
        return self.function(y_true, y_pred, self.class_weights, **self.options)


class CategoricalCrossentropy(WeightedLoss):
    """Pixel-mean categorical cross-entropy, optionally class-weighted."""

    function = staticmethod(categorical_crossentropy)

    def __init__(self, class_weights: Sequence[float] | None = None, name: str = 'cce',
                 hard_fraction: float = 1.0, edge_weight: float = 0.0,
                 edge_width: int = 2) -> None:
        super().__init__(class_weights, name, hard_fraction=hard_fraction,
                         edge_weight=edge_weight, edge_width=edge_width)


class DiceLoss(WeightedLoss):
    """Dice loss; with ``class_weights`` it is the class-weighted Dice."""

    function = staticmethod(dice_loss)

    def __init__(self, class_weights: Sequence[float] | None = None, smooth: float = SMOOTH,
                 name: str = 'dice') -> None:
        super().__init__(class_weights, name, smooth=smooth)


class JaccardLoss(WeightedLoss):
    """Soft Jaccard (IoU) loss."""

    function = staticmethod(jaccard_loss)

    def __init__(self, class_weights: Sequence[float] | None = None, smooth: float = SMOOTH,
                 name: str = 'jaccard') -> None:
        super().__init__(class_weights, name, smooth=smooth)


class FocalLoss(SegmentationLoss):
    """Categorical focal loss."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, name: str = 'focal') -> None:
        super().__init__(name)
        self.alpha = alpha
        self.gamma = gamma

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Return :func:`focal_loss`."""
        return focal_loss(y_true, y_pred, self.alpha, self.gamma)


def frequency_weights(frequencies: Sequence[float]) -> list[float]:
    """Return inverse-frequency class weights scaled to mean 1 over the classes present.

    A class that never occurs gets weight 0 (it has nothing to be weighted for).
    """
    freq = np.asarray(frequencies, dtype=np.float64)
    if freq.ndim != 1 or (freq < 0).any() or not (freq > 0).any():
        raise ValueError(f'frequencies must be non-negative numbers, at least one positive; '
                         f'got {list(frequencies)}')
    inv = np.where(freq > 0, 1.0 / np.where(freq > 0, freq, 1.0), 0.0)
    inv *= (freq > 0).sum() / inv.sum()
    return [float(v) for v in inv]


def resolve_class_weights(spec: Mapping,
                          frequencies: Sequence[float] | None = None) -> list[float] | None:
    """Return the class weights a ``loss`` section asks for (``None``: unweighted)."""
    weights = spec.get('class_weights')
    if weights is None and spec['name'] == 'weighted_dice':
        weights = 'auto'
    if weights != 'auto':
        return None if weights is None else [float(w) for w in weights]
    if frequencies is None:
        raise ValueError('loss.class_weights: auto needs the per-category frequencies of '
                         'the training split (from the prepared manifest); none were given')
    return frequency_weights(frequencies)


def make_loss(spec: Mapping, frequencies: Sequence[float] | None = None) -> SegmentationLoss:
    """Build the loss a config's ``loss`` section describes.

    ``spec['class_weights']`` is ``'auto'`` (inverse frequency from ``frequencies``, the
    training split's per-category pixel frequencies), a list of one weight per category, or
    ``None``. Weights apply to ``weighted_dice`` (``'auto'`` by default) and to the cross-entropy
    and Dice terms of ``cce``/``cce_dice`` when given; ``hard_pixel_fraction``, ``edge_weight``
    and ``edge_width`` to their cross-entropy.
    """
    name = spec['name']
    weights = resolve_class_weights(spec, frequencies)
    cce = CategoricalCrossentropy(weights, hard_fraction=spec.get('hard_pixel_fraction', 1.0),
                                  edge_weight=spec.get('edge_weight', 0.0),
                                  edge_width=spec.get('edge_width', 2))
    if name == 'cce':
        return cce
    if name in ('dice', 'weighted_dice'):
        return DiceLoss(weights, name=name)
    if name == 'jaccard':
        return JaccardLoss(weights)
    if name == 'focal':
        return FocalLoss(spec.get('focal_alpha', 0.25), spec.get('focal_gamma', 2.0))
    if name == 'cce_dice':
        return (spec.get('cce_weight', 1.0) * cce
                + spec.get('dice_weight', 1.0) * DiceLoss(weights))
    raise ValueError(f'loss.name must be one of {list(LOSS_NAMES)}; got {name!r}')
