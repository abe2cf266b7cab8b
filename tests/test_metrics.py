"""Metrics against a hand-computed confusion matrix (ignore pixels and an absent class included)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.errors import ToolkitError
from runtime.metrics import ConfusionMeter, confusion_matrix


# 4 classes; class 3 never appears in gt nor pred; 255 pixels are ignored.
GT = np.array([[0, 0, 1, 1],
               [0, 2, 2, 255],
               [255, 2, 1, 0]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [0, 2, 0, 3],  # predictions under 255 (here class 3) are ignored
                 [2, 2, 1, 0]], dtype=np.uint8)


def test_confusion_matrix_by_hand():
    m = confusion_matrix(PRED, GT, num_classes=4)
    # gt 0 at (0,0)->0 (0,1)->1 (1,0)->0 (2,3)->0 ; gt 1 at (0,2)->1 (0,3)->1 (2,2)->1
    # gt 2 at (1,1)->2 (1,2)->0 (2,1)->2
    expected = np.array([[3, 1, 0, 0],
                         [0, 3, 0, 0],
                         [1, 0, 2, 0],
                         [0, 0, 0, 0]])
    assert m.dtype == np.int64
    np.testing.assert_array_equal(m, expected)


def test_iou_miou_and_accuracy_by_hand():
    meter = ConfusionMeter(4)
    meter.update(PRED, GT)
    iou = meter.per_class_iou()
    # class 0: TP 3, FP 1 (gt2->0), FN 1 -> 3/5 ; class 1: TP 3, FP 1, FN 0 -> 3/4 ; class 2: 2/3
    np.testing.assert_allclose(iou[:3], [3 / 5, 3 / 4, 2 / 3])
    assert math.isnan(iou[3])
    assert meter.miou() == pytest.approx((3 / 5 + 3 / 4 + 2 / 3) / 3)
    assert meter.pixel_accuracy() == pytest.approx(8 / 10)


def test_one_matrix_over_the_split_not_mean_of_images():
    # Image A: class 0 perfect, class 1 absent. Image B: class 1 mostly wrong.
    a_gt = np.zeros((2, 2), np.uint8)
    a_pred = a_gt.copy()
    b_gt = np.array([[1, 1], [1, 0]], np.uint8)
    b_pred = np.array([[1, 0], [0, 0]], np.uint8)
    meter = ConfusionMeter(2)
    meter.update(a_pred, a_gt)
    meter.update(b_pred, b_gt)
    # accumulated: gt0: 5 correct ; gt1: 1 correct, 2 -> 0
    np.testing.assert_array_equal(meter.matrix, [[5, 0], [2, 1]])
    assert meter.miou() == pytest.approx((5 / 7 + 1 / 3) / 2)
    # the per-image mean would differ: image A mIoU 1.0 (only class 0), image B ((1/3)+(1/3))/2
    assert meter.miou() != pytest.approx((1.0 + 1 / 3) / 2)


def test_class_only_in_prediction_counts_as_zero_iou():
    gt = np.zeros((1, 4), np.uint8)
    pred = np.array([[0, 0, 0, 2]], np.uint8)
    meter = ConfusionMeter(3)
    meter.update(pred, gt)
    iou = meter.per_class_iou()
    assert iou[0] == pytest.approx(3 / 4)
    assert math.isnan(iou[1])
    assert iou[2] == 0.0
    assert meter.miou() == pytest.approx(3 / 8)


def test_all_ignored_gives_nan_and_reset():
    meter = ConfusionMeter(3)
    meter.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8))
    assert math.isnan(meter.miou()) and math.isnan(meter.pixel_accuracy())
    meter.update(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    assert meter.miou() == 1.0
    meter.reset()
    assert meter.matrix.sum() == 0 and meter.images == 0
    s = ConfusionMeter(2).summary(["a", "b"])
    assert s["miou"] is None and s["per_class_iou"] == {"a": None, "b": None}


def test_shape_mismatch_and_bad_prediction_raise():
    with pytest.raises(ToolkitError, match="shapes"):
        confusion_matrix(np.zeros((2, 3)), np.zeros((3, 2)), 2)
    with pytest.raises(ToolkitError, match="outside"):
        confusion_matrix(np.full((2, 2), 5), np.zeros((2, 2)), 2)
