"""Localization error on hand-worked cases: right class wrong box, right box wrong class, several gts, oracle."""

import numpy as np
import pytest

from detres.evaluation.localization import guess_is_correct, localization_errors

GT_BOX = np.array([[10.0, 10.0, 50.0, 50.0]], np.float32)  # area 1600


def _box(x1, y1, x2, y2):
    return np.array([x1, y1, x2, y2], np.float32)


def test_iou_threshold_is_inclusive_at_half():
    # [10,10,50,30] inside the gt: IoU = 800 / 1600 = 0.5 exactly -> correct; one pixel less -> 760/1600 < 0.5
    assert guess_is_correct(3, _box(10, 10, 50, 30), GT_BOX, np.array([3]))
    assert not guess_is_correct(3, _box(10, 10, 50, 29), GT_BOX, np.array([3]))


def test_right_class_wrong_box_and_right_box_wrong_class_are_errors():
    gt = {0: (GT_BOX, np.array([3]))}
    assert localization_errors({0: [(3, _box(60, 60, 90, 90))]}, gt)["loc/top1_err"] == 100.0
    assert localization_errors({0: [(2, _box(10, 10, 50, 50))]}, gt)["loc/top1_err"] == 100.0
    assert localization_errors({0: [(3, _box(12, 10, 50, 52))]}, gt)["loc/top1_err"] == 0.0


def test_top5_counts_any_of_five_but_not_the_sixth():
    gt = {0: (GT_BOX, np.array([3])), 1: (GT_BOX, np.array([4]))}
    wrong = [(c, _box(10, 10, 50, 50)) for c in (7, 8, 9, 10)]
    guesses = {0: [*wrong, (3, _box(10, 10, 50, 50))],  # right at rank 5
               1: [*wrong, (9, _box(0, 0, 5, 5)), (4, _box(10, 10, 50, 50))]}  # right only at rank 6
    errs = localization_errors(guesses, gt)
    assert errs["loc/top1_err"] == 100.0
    assert errs["loc/top5_err"] == 50.0


def test_several_ground_truths_any_box_of_the_class_counts():
    boxes = np.array([[0, 0, 20, 20], [60, 60, 100, 100], [30, 0, 50, 20]], np.float32)
    labels = np.array([5, 5, 6])
    gt = {0: (boxes, labels)}
    # matches the second box of class 5 -> correct
    assert localization_errors({0: [(5, _box(61, 60, 100, 99))]}, gt)["loc/top1_err"] == 0.0
    # matches the class-6 box but is called class 5 -> wrong
    assert localization_errors({0: [(5, _box(30, 0, 50, 20))]}, gt)["loc/top1_err"] == 100.0
    # an image without any guess is an error
    assert localization_errors({1: [(5, _box(0, 0, 20, 20))]}, gt)["loc/top5_err"] == 100.0


def test_gt_class_oracle_judges_the_box_alone():
    gt = {0: (GT_BOX, np.array([3])), 1: (GT_BOX, np.array([4])), 2: (GT_BOX, np.array([1])),
          3: (GT_BOX, np.array([2]))}
    oracle = {0: _box(10, 10, 50, 50), 1: _box(10, 10, 50, 50), 2: _box(40, 40, 90, 90)}  # image 3: no box
    errs = localization_errors({}, gt, oracle)
    assert errs == {"loc/gt_cls_err": pytest.approx(50.0)}
