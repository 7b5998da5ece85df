"""Keras streaming metric that monitors training with the node's mIoU definition.

It accumulates one confusion matrix over every batch of an epoch (Keras resets it at each
epoch and before validation) and reports the mean IoU over the non-void categories with
void ground truth ignored, exactly as ``fvt_segmentation.core.metrics.summarize(cm)['miou']``.
"""

from __future__ import annotations

import tensorflow as tf

from fvt_segmentation.core.contract import CATEGORIES, VOID


class StreamingMeanIoU(tf.keras.metrics.Metric):
    """Dataset-level mIoU over the non-ignored classes from a confusion matrix (name ``miou``).

    ``y_true`` is one-hot (or scores) and ``y_pred`` scores, both ``[B, H, W, C]``; both are
    turned into class ids with argmax. Classes absent from truth and prediction are left out
    of the mean.
    """

    def __init__(self, num_classes: int = len(CATEGORIES), ignore_index: int | None = VOID,
                 name: str = 'miou', **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = self.add_weight('confusion_matrix', shape=(num_classes, num_classes),
                                      initializer='zeros', dtype=tf.float64)

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor,
                     sample_weight: tf.Tensor | None = None) -> None:
        """Add the batch's pixels to the confusion matrix (rows truth, columns prediction)."""
        truth = tf.reshape(tf.argmax(y_true, axis=-1), [-1])
        pred = tf.reshape(tf.argmax(y_pred, axis=-1), [-1])
        weights = None
        if sample_weight is not None:
            weights = tf.reshape(tf.broadcast_to(tf.cast(sample_weight, tf.float64),
                                                 tf.shape(y_true)[:-1]), [-1])
        batch = tf.math.confusion_matrix(truth, pred, self.num_classes, weights=weights,
                                         dtype=tf.float64)
        self.matrix.assign_add(batch)

    def per_class_iou(self) -> tf.Tensor:
        """IoU per class with ignored truth dropped; NaN where a class is absent."""
        cm = self.matrix
        if self.ignore_index is not None:
            keep = tf.one_hot(self.ignore_index, self.num_classes, on_value=0.0, off_value=1.0,
                              dtype=tf.float64)
            cm = cm * keep[:, None]
        tp = tf.linalg.diag_part(cm)
        union = tf.reduce_sum(cm, 0) + tf.reduce_sum(cm, 1) - tp
        nan = tf.constant(float('nan'), tf.float64)
        return tf.where(union > 0, tp / tf.where(union > 0, union, 1.0), nan)

    def result(self) -> tf.Tensor:
        """Mean IoU over the present non-ignored classes (0 before any pixel was seen)."""
        iou = self.per_class_iou()
        mask = ~tf.math.is_nan(iou)
        if self.ignore_index is not None:
            mask &= tf.range(self.num_classes) != self.ignore_index
        present = tf.boolean_mask(iou, mask)
        mean = tf.math.divide_no_nan(tf.reduce_sum(present),
                                     tf.cast(tf.size(present), tf.float64))
        return tf.cast(mean, tf.float32)

    def reset_state(self) -> None:
        """Clear the confusion matrix (Keras calls this at each epoch start)."""
        self.matrix.assign(tf.zeros_like(self.matrix))

    def get_config(self) -> dict:
        """Return the constructor arguments."""
        return {**super().get_config(), 'num_classes': self.num_classes,
                'ignore_index': self.ignore_index}
