"""cvtool.metrics: one confusion matrix, ignore handling, pixel accuracy and IoU, on hand-checked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvtool.metrics import (
    SegMetrics,
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    mean_iou,
    nan_mean,
    pixel_accuracy,
)

# 6 pixels, 3 classes; the 4th pixel is ignored (255) whatever is predicted there.
PRED = np.array([[0, 1, 1], [2, 0, 1]])
TRUE = np.array([[0, 1, 2], [255, 0, 0]])
# kept (truth, pred): (0,0) (1,1) (2,1) (0,0) (0,1)
CM = np.array([[2, 1, 0],
               [0, 1, 0],
               [0, 1, 0]])


def test_confusion_matrix_counts_truth_by_prediction_and_skips_ignored():
    cm = confusion_matrix(PRED, TRUE, 3)
    np.testing.assert_array_equal(cm, CM)
    assert cm.dtype == np.int64 and cm.sum() == 5


def test_pixel_accuracy_and_iou_by_hand():
    assert pixel_accuracy(CM) == pytest.approx(3 / 5)
    # class 0: TP 2, FP 0, FN 1 -> 2/3; class 1: TP 1, FP 2, FN 0 -> 1/3; class 2: TP 0, FP 0, FN 1 -> 0
    np.testing.assert_allclose(iou_per_class(CM), [2 / 3, 1 / 3, 0.0])
    assert mean_iou(CM) == pytest.approx(1 / 3)


def test_dice_by_hand_and_absent_classes_left_out():
    # class 0: 2 TP, 0 FP, 1 FN -> 4/5; class 1: 1 TP, 2 FP -> 2/4; class 2: 0 TP, 1 FN -> 0; class 3: nowhere
    dice = dice_per_class(confusion_matrix(PRED, TRUE, 4))
    np.testing.assert_allclose(dice[:3], [4 / 5, 2 / 4, 0.0])
    assert math.isnan(dice[3]) and nan_mean(dice) == pytest.approx((4 / 5 + 2 / 4) / 3)
    iou = iou_per_class(CM)
    np.testing.assert_allclose(dice[:3], 2 * iou / (1 + iou))  # the identity between the two


def test_a_class_absent_from_truth_and_prediction_is_nan_and_left_out_of_the_mean():
    cm = confusion_matrix(PRED, TRUE, 4)  # class 3 appears nowhere
    iou = iou_per_class(cm)
    assert math.isnan(iou[3])
    np.testing.assert_allclose(iou[:3], [2 / 3, 1 / 3, 0.0])
    assert mean_iou(cm) == pytest.approx(1 / 3)  # over the 3 classes that occur, not 4
    s = SegMetrics(4)
    s.update(PRED, TRUE)
    out = s.summary()
    assert out["iou"][3] is None and out["iou"][:3] == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert out["mean_iou"] == pytest.approx(1 / 3) and out["pixel_accuracy"] == pytest.approx(0.6)


def test_a_class_only_predicted_scores_zero_and_counts_in_the_mean():
    pred = np.array([0, 0, 1, 1])
    true = np.array([0, 0, 0, 0])  # class 1 never true, but predicted twice: IoU 0, not NaN
    cm = confusion_matrix(pred, true, 2)
    np.testing.assert_array_equal(cm, [[2, 2], [0, 0]])
    np.testing.assert_allclose(iou_per_class(cm), [0.5, 0.0])
    assert mean_iou(cm) == pytest.approx(0.25)


def test_everything_ignored_gives_nan_not_an_error():
    cm = confusion_matrix(np.zeros(4, int), np.full(4, 255), 3)
    assert cm.sum() == 0
    assert math.isnan(pixel_accuracy(cm)) and math.isnan(mean_iou(cm))
    assert all(v is None for v in SegMetrics(3).summary()["iou"])


def test_another_ignore_index():
    cm = confusion_matrix(np.array([1, 1, 0]), np.array([1, 7, 0]), 2, ignore_index=7)
    np.testing.assert_array_equal(cm, [[1, 0], [0, 1]])


def test_accumulating_batches_equals_one_matrix():
    s = SegMetrics(3)
    s.update(PRED[:1], TRUE[:1])
    s.update(PRED[1:], TRUE[1:])
    np.testing.assert_array_equal(s.cm, CM)


def test_bad_input():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="pixels"):
        confusion_matrix(np.array([0, 1, 1]), np.array([0, 1]), 3)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 5), st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_matches_a_pixel_by_pixel_count(K, n, seed):
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, K, n)
    true = np.where(rng.random(n) < 0.2, 255, rng.integers(0, K, n))
    want = np.zeros((K, K), np.int64)
    for t, p in zip(true, pred):
        if t != 255:
            want[t, p] += 1
    cm = confusion_matrix(pred, true, K)
    np.testing.assert_array_equal(cm, want)
    for k in range(K):
        tp, fp, fn = want[k, k], want[:, k].sum() - want[k, k], want[k].sum() - want[k, k]
        got = iou_per_class(cm)[k]
        assert (math.isnan(got) and tp + fp + fn == 0) or got == pytest.approx(tp / (tp + fp + fn))
