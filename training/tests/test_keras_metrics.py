import numpy as np
import pytest
import tensorflow as tf

from fvt_segmentation.core.contract import CATEGORIES
from fvt_segmentation.core.metrics import confusion_matrix, summarize
from fvt_training.runs.keras_metrics import StreamingMeanIoU


def _onehot(ids, classes):
    return np.eye(classes, dtype='float32')[np.asarray(ids)]


def test_void_truth_is_ignored_hand_computed():
    # truth [[0, 1], [1, 2]], prediction [[1, 1], [2, 2]], class 0 = void.
    # Without void truth: class 1 tp 1, union 2 -> 0.5; class 2 tp 1, union 2 -> 0.5.
    metric = StreamingMeanIoU(num_classes=3, ignore_index=0)
    metric.update_state(_onehot([[[0, 1], [1, 2]]], 3), _onehot([[[1, 1], [2, 2]]], 3))
    assert float(metric.result()) == pytest.approx(0.5)
    # Counting the void pixel would make class 1 IoU 1/3 (mean 5/12).
    plain = StreamingMeanIoU(num_classes=3, ignore_index=None)
    plain.update_state(_onehot([[[0, 1], [1, 2]]], 3), _onehot([[[1, 1], [2, 2]]], 3))
    assert float(plain.result()) == pytest.approx((0.0 + 1 / 3 + 0.5) / 3)


def test_accumulates_over_batches_not_averaging_them():
    metric = StreamingMeanIoU(num_classes=3, ignore_index=0)
    # batch 1: class 1 perfect (IoU 1); batch 2: class 1 half right, class 2 present.
    metric.update_state(_onehot([[[1, 1]]], 3), _onehot([[[1, 1]]], 3))
    after_first = float(metric.result())
    metric.update_state(_onehot([[[1, 2]]], 3), _onehot([[[2, 2]]], 3))
    # totals: class 1 tp 2, truth 3, predicted 2 -> 2/3; class 2 tp 1, truth 1, pred 2 -> 1/2
    assert after_first == pytest.approx(1.0)
    assert float(metric.result()) == pytest.approx((2 / 3 + 1 / 2) / 2)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_keras_evaluate_matches_fvt_segmentation_metrics():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, len(CATEGORIES), (6, 8, 8))
    scores = rng.uniform(0, 1, (6, 8, 8, len(CATEGORIES))).astype('float32')
    inputs = tf.keras.Input((8, 8, len(CATEGORIES)))
    model = tf.keras.Model(inputs, tf.keras.layers.Activation('linear')(inputs))
    model.compile(loss='categorical_crossentropy', metrics=[StreamingMeanIoU()])
    result = model.evaluate(scores, _onehot(truth, len(CATEGORIES)), batch_size=2,
                            return_dict=True, verbose=0)
    cm = confusion_matrix(truth, scores.argmax(-1), len(CATEGORIES))
    expected = summarize(cm, CATEGORIES, 0)['miou']
    assert result['miou'] == pytest.approx(expected, rel=1e-5)
    # the mean of per-batch scores differs: the metric really is dataset-level
    per_batch = [summarize(confusion_matrix(truth[i:i + 2], scores[i:i + 2].argmax(-1),
                                            len(CATEGORIES)), CATEGORIES, 0)['miou']
                 for i in range(0, 6, 2)]
    assert np.mean(per_batch) != pytest.approx(expected, rel=1e-5)
