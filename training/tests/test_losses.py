import math

import numpy as np
import pytest
import tensorflow as tf

from fvt_training.runs.losses import (
    CategoricalCrossentropy,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    categorical_crossentropy,
    dice_loss,
    edge_pixels,
    focal_loss,
    frequency_weights,
    jaccard_loss,
    make_loss,
)

# One image of two pixels, two classes: truth class 0 then class 1.
Y_TRUE = tf.constant([[[[1.0, 0.0], [0.0, 1.0]]]])
Y_PRED = tf.constant([[[[0.8, 0.2], [0.4, 0.6]]]])
LN08, LN06 = -math.log(0.8), -math.log(0.6)
# Per class (summed over pixels): class 0 tp 0.8 fp 0.4 fn 0.2; class 1 tp 0.6 fp 0.2 fn 0.4.
DICE = (1.6 / 2.2, 1.2 / 1.8)
IOU = (0.8 / 1.4, 0.6 / 1.2)


def _f(value):
    return float(value)


def test_categorical_crossentropy():
    assert _f(categorical_crossentropy(Y_TRUE, Y_PRED)) == pytest.approx((LN08 + LN06) / 2)
    weighted = categorical_crossentropy(Y_TRUE, Y_PRED, [1.0, 3.0])
    assert _f(weighted) == pytest.approx((LN08 + 3 * LN06) / 2)


# A row of five pixels, classes 0 0 0 0 1; the truth scores 0.8 on class 0, 0.6 on class 1.
ROW_TRUE = tf.constant([[[[1.0, 0.0]] * 4 + [[0.0, 1.0]]]])
ROW_PRED = tf.constant([[[[0.8, 0.2]] * 4 + [[0.4, 0.6]]]])


def test_edge_pixels_are_those_with_another_category_nearby_not_the_image_border():
    assert edge_pixels(ROW_TRUE, 1).numpy().tolist() == [[[0, 0, 0, 1, 1]]]
    assert edge_pixels(ROW_TRUE, 2).numpy().tolist() == [[[0, 0, 1, 1, 1]]]
    square = np.zeros((1, 5, 5, 2), np.float32)
    square[..., 0] = 1.0
    square[0, 2, 2] = (0.0, 1.0)  # one pixel of class 1 in the middle
    edges = edge_pixels(tf.constant(square), 1).numpy()[0]
    assert edges[1:4, 1:4].sum() == 9 and edges.sum() == 9


def test_edge_weighted_crossentropy_counts_edge_pixels_1_plus_weight_times():
    # width 1: the last two pixels are edge, each counts twice with edge_weight 1
    assert _f(categorical_crossentropy(ROW_TRUE, ROW_PRED, edge_weight=1.0, edge_width=1)) == \
        pytest.approx((3 * LN08 + 2 * LN08 + 2 * LN06) / 5)
    # width 2: three edge pixels, three times with edge_weight 2; the mean stays over 5 pixels
    assert _f(categorical_crossentropy(ROW_TRUE, ROW_PRED, edge_weight=2.0, edge_width=2)) == \
        pytest.approx((2 * LN08 + 3 * (2 * LN08 + LN06)) / 5)
    built = make_loss({'name': 'cce', 'edge_weight': 1.0, 'edge_width': 1})
    assert _f(built(ROW_TRUE, ROW_PRED)) == pytest.approx((5 * LN08 + 2 * LN06) / 5)
    assert _f(categorical_crossentropy(ROW_TRUE, ROW_PRED)) == pytest.approx(
        (4 * LN08 + LN06) / 5)
    with pytest.raises(ValueError, match='edge_weight must be >= 0; got -1.0'):
        categorical_crossentropy(ROW_TRUE, ROW_PRED, edge_weight=-1.0)
    with pytest.raises(ValueError, match='edge width must be >= 1 pixel; got 0'):
        categorical_crossentropy(ROW_TRUE, ROW_PRED, edge_weight=1.0, edge_width=0)


def test_hard_pixel_crossentropy_averages_only_the_hardest_pixels():
    # Pixel losses ln(1/0.8) < ln(1/0.6): half of the two pixels keeps the second alone.
    assert _f(categorical_crossentropy(Y_TRUE, Y_PRED, hard_fraction=0.5)) == pytest.approx(LN06)
    # ceil(0.3 * 2) = 1 pixel; weights rank by the weighted loss: 3 * ln(1/0.8) wins.
    weighted = categorical_crossentropy(Y_TRUE, Y_PRED, [3.0, 1.0], hard_fraction=0.3)
    assert _f(weighted) == pytest.approx(3 * LN08)
    assert _f(categorical_crossentropy(Y_TRUE, Y_PRED, hard_fraction=1.0)) == pytest.approx(
        (LN08 + LN06) / 2)
    with pytest.raises(ValueError, match=r'hard_fraction must be in \(0, 1\]; got 0.0'):
        categorical_crossentropy(Y_TRUE, Y_PRED, hard_fraction=0.0)


def test_dice_and_weighted_dice():
    assert _f(dice_loss(Y_TRUE, Y_PRED)) == pytest.approx(1 - sum(DICE) / 2, abs=1e-5)
    weighted = dice_loss(Y_TRUE, Y_PRED, [1.0, 3.0])
    assert _f(weighted) == pytest.approx(1 - (DICE[0] + 3 * DICE[1]) / 4, abs=1e-5)
    assert _f(dice_loss(Y_TRUE, Y_TRUE)) == pytest.approx(0.0, abs=1e-6)


def test_jaccard():
    assert _f(jaccard_loss(Y_TRUE, Y_PRED)) == pytest.approx(1 - sum(IOU) / 2, abs=1e-5)
    assert _f(jaccard_loss(Y_TRUE, Y_TRUE)) == pytest.approx(0.0, abs=1e-6)


def test_focal():
    expected = 0.25 * (0.2 ** 2 * LN08 + 0.4 ** 2 * LN06) / 2
    assert _f(focal_loss(Y_TRUE, Y_PRED, alpha=0.25, gamma=2.0)) == pytest.approx(expected)
    # gamma 0 and alpha 1 is plain cross-entropy
    assert _f(focal_loss(Y_TRUE, Y_PRED, 1.0, 0.0)) == pytest.approx((LN08 + LN06) / 2)


def test_classes_wrap_the_functions_and_compose():
    assert _f(CategoricalCrossentropy()(Y_TRUE, Y_PRED)) == pytest.approx((LN08 + LN06) / 2)
    assert _f(JaccardLoss()(Y_TRUE, Y_PRED)) == pytest.approx(1 - sum(IOU) / 2, abs=1e-5)
    assert _f(FocalLoss(1.0, 0.0)(Y_TRUE, Y_PRED)) == pytest.approx((LN08 + LN06) / 2)
    combo = CategoricalCrossentropy() + 2 * DiceLoss()
    expected = (LN08 + LN06) / 2 + 2 * (1 - sum(DICE) / 2)
    assert _f(combo(Y_TRUE, Y_PRED)) == pytest.approx(expected, abs=1e-5)
    assert combo.name == 'cce_plus_dice'
    assert _f((0.5 * combo)(Y_TRUE, Y_PRED)) == pytest.approx(expected / 2, abs=1e-5)


def test_frequency_weights_are_inverse_and_mean_one_over_present_classes():
    assert frequency_weights([0.5, 0.25, 0.25, 0.0]) == pytest.approx([0.6, 1.2, 1.2, 0.0])
    with pytest.raises(ValueError, match='at least one positive'):
        frequency_weights([0.0, 0.0])


def test_make_loss_builds_each_configured_loss():
    spec = {'name': 'cce_dice', 'class_weights': None, 'cce_weight': 1.0, 'dice_weight': 2.0}
    expected = (LN08 + LN06) / 2 + 2 * (1 - sum(DICE) / 2)
    assert _f(make_loss(spec)(Y_TRUE, Y_PRED)) == pytest.approx(expected, abs=1e-5)
    # weighted_dice takes its weights from the frequencies: [0.75, 0.25] -> [0.5, 1.5]
    weighted = make_loss({'name': 'weighted_dice', 'class_weights': None}, [0.75, 0.25])
    assert weighted.class_weights == pytest.approx([0.5, 1.5])
    expected = 1 - (0.5 * DICE[0] + 1.5 * DICE[1]) / 2
    assert _f(weighted(Y_TRUE, Y_PRED)) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match='frequencies'):
        make_loss({'name': 'weighted_dice', 'class_weights': 'auto'})
    focal = make_loss({'name': 'focal', 'focal_alpha': 1.0, 'focal_gamma': 0.0})
    assert _f(focal(Y_TRUE, Y_PRED)) == pytest.approx((LN08 + LN06) / 2)
    hard = make_loss({**spec, 'hard_pixel_fraction': 0.5})
    assert _f(hard(Y_TRUE, Y_PRED)) == pytest.approx(LN06 + 2 * (1 - sum(DICE) / 2), abs=1e-5)


def test_a_composed_loss_trains_a_keras_model():
    inputs = tf.keras.Input((4, 4, 3))
    outputs = tf.keras.layers.Conv2D(2, 1, activation='softmax')(inputs)
    model = tf.keras.Model(inputs, outputs)
    model.compile(tf.keras.optimizers.Adam(0.05), loss=CategoricalCrossentropy() + DiceLoss())
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, 4, 4, 3)).astype('float32')
    y = np.eye(2, dtype='float32')[(x[..., 0] > 0).astype(int)]
    first = model.train_on_batch(x, y)
    for _ in range(30):
        last = model.train_on_batch(x, y)
    assert last < first
