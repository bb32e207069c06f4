"""Error attribution on hand-built cases (each lands in its own category), PR curve areas against COCOeval's AP,
and the two COCO backends against each other."""

import contextlib
import io
import json

import numpy as np
import pytest
from analysis_helpers import noisy_results, shapes_val
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detres.analysis import coco_errors, tide
from detres.analysis.cocoeval_runs import FlaggedCOCOeval, detections_coco
from detres.analysis.confusion import confusion_matrix
from detres.analysis.pr import matches_of, pr_curve, score_curve
from detres.data.records import ClassMap, DetRecord
from detres.evaluation.coco import coco_from_records, evaluate_coco

CLASSES = ClassMap(names=["a", "b"], dataset_ids=[1, 2])
A, B = [20.0, 20.0, 80.0, 80.0], [120.0, 120.0, 180.0, 180.0]  # two class-1 objects, XYXY


def _gt(boxes, labels=None):
    labels = labels or [1] * len(boxes)
    rec = DetRecord("x.jpg", 1, 200, 200, np.array(boxes, np.float32), np.array(labels, np.int64),
                    np.zeros(len(boxes), bool))
    return coco_from_records([rec], CLASSES)


def _det(box, score, cat=1):
    x1, y1, x2, y2 = box
    return {"image_id": 1, "category_id": cat, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}


def _attribute(gt, results):
    ev = FlaggedCOCOeval(gt, detections_coco(gt, results), iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    a = tide.attribute_errors(gt, results, matches_of(ev, 0))
    return a.counts(), tide.error_dap(gt, results, a)


def _only(counts, dap, kind, gain):
    assert counts == {k: int(k == kind) for k in tide.ERROR_TYPES}
    for k in tide.ERROR_TYPES:
        assert dap[k] == pytest.approx(gain if k == kind else 0.0, abs=1e-9), k


AP_ONE_FP_BETWEEN = 100 * (51 + 50 * 2 / 3) / 101  # TP, FP, TP over 2 objects at COCO's 101 recall points


def test_right_box_wrong_class_is_a_classification_error():
    counts, dap = _attribute(_gt([A]), [_det(A, 0.9, cat=2)])
    _only(counts, dap, "cls", 100.0)  # class a: AP 0 -> 100 once the class is fixed; class b has no object


def test_iou_03_box_of_the_right_class_is_a_localization_error():
    shifted = [20.0, 20.0, 80.0, 80.0 * 0.3 + 20 * 0.7]  # same width, 30% of the height inside A: IoU 0.3
    assert tide.iou_matrix(np.array([shifted]), np.array([A]))[0, 0] == pytest.approx(0.3)
    counts, dap = _attribute(_gt([A]), [_det(shifted, 0.9)])
    _only(counts, dap, "loc", 100.0)


def test_second_box_on_a_matched_object_is_a_duplicate():
    near = [22.0, 22.0, 80.0, 80.0]
    counts, dap = _attribute(_gt([A, B]), [_det(A, 0.9), _det(near, 0.8), _det(B, 0.7)])
    _only(counts, dap, "dupe", 100.0 - AP_ONE_FP_BETWEEN)


def test_box_on_nothing_is_background():
    counts, dap = _attribute(_gt([A, B]), [_det(A, 0.9), _det([90.0, 0.0, 110.0, 20.0], 0.8), _det(B, 0.7)])
    _only(counts, dap, "bkg", 100.0 - AP_ONE_FP_BETWEEN)


def test_object_without_a_box_is_missed():
    counts, dap = _attribute(_gt([A, B]), [_det(A, 0.9)])
    _only(counts, dap, "miss", 100.0 - 100 * 51 / 101)  # recall stops at 1/2 (51 of 101 points); 100 once removed


def test_perfect_results_have_no_errors_and_a_diagonal_confusion_matrix():
    gt = _gt([A, B], [1, 2])
    results = [_det(A, 0.9, 1), _det(B, 0.8, 2)]
    counts, dap = _attribute(gt, results)
    assert counts == dict.fromkeys(tide.ERROR_TYPES, 0)
    assert dap["base"] == pytest.approx(100.0) and all(dap[k] == 0 for k in tide.ERROR_TYPES)
    assert confusion_matrix(gt, results, iou_thresh=0.5, score_thresh=0.5).tolist() == [[1, 0, 0], [0, 1, 0],
                                                                                         [0, 0, 0]]


def test_confusion_matrix_counts_wrong_class_background_and_missed():
    gt = _gt([A, B], [1, 2])
    results = [_det(A, 0.9, 2), _det([90.0, 0.0, 110.0, 20.0], 0.8, 1), _det(B, 0.1, 2)]  # last below threshold
    m = confusion_matrix(gt, results, iou_thresh=0.5, score_thresh=0.5)
    assert m.tolist() == [[0, 1, 0], [0, 0, 1], [1, 0, 0]]  # a seen as b; b missed; one box on background


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    ann, _ = shapes_val(tmp_path_factory.mktemp("shapes"))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
    return ann, gt, noisy_results(json.loads(ann.read_text()))


def _pycocotools(gt, results):
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes([dict(r) for r in results]), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def test_pr_curve_area_equals_the_evaluator_ap(noisy):
    _, gt, results = noisy
    ev = _pycocotools(gt, results)
    for iou, stat in ((0.5, 1), (0.75, 2)):
        curve = pr_curve(ev, iou=iou, k=None)
        assert np.mean(curve) == pytest.approx(ev.stats[stat], abs=1e-12)  # COCO AP: mean of 101 points
        # the area under the drawn curve, within the 101-point sampling (1/100 of recall per step)
        assert np.trapezoid(curve, np.linspace(0, 1, 101)) == pytest.approx(ev.stats[stat], abs=0.01)
    per_class = [np.mean(pr_curve(ev, iou=0.5, k=k)) for k in range(len(ev.params.catIds))]
    assert np.mean(per_class) == pytest.approx(ev.stats[1], abs=1e-12)


def test_score_curve_best_f1_by_hand():
    gt = _gt([A, B])
    results = [_det(A, 0.9), _det([90.0, 0.0, 110.0, 20.0], 0.8), _det(B, 0.3)]
    ev = FlaggedCOCOeval(gt, detections_coco(gt, results), iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    curve = score_curve(matches_of(ev, 0), 1)
    assert curve.thresholds.tolist() == [0.9, 0.8, 0.3]
    assert curve.f1 == pytest.approx([2 / 3, 0.5, 0.8])  # P,R = (1, 1/2), (1/2, 1/2), (2/3, 1)
    assert curve.best()["best_f1_thresh"] == 0.3


def test_hoiem_curves_are_nested_and_start_at_c75_and_c50(noisy):
    _, gt, results = noisy
    ev = _pycocotools(gt, results)
    mean = coco_errors.mean_curves(coco_errors.hoiem_curves(gt, results))
    areas = coco_errors.curve_areas(mean)
    assert areas["C75"] == pytest.approx(ev.stats[2], abs=1e-12)
    assert areas["C50"] == pytest.approx(ev.stats[1], abs=1e-12)
    values = [areas[k] for k in coco_errors.KINDS]
    assert values == sorted(values) and values[-1] == 1.0  # each curve forgives more than the one before
    assert areas["Oth"] > areas["Loc"]  # the noisy results do confuse classes


@pytest.mark.parametrize("with_results", [True, False])
def test_faster_coco_eval_gives_pycocotools_twelve_stats(noisy, with_results):
    _, gt, results = noisy
    results = results if with_results else [r for r in results if r["category_id"] == 1]
    ours = evaluate_coco(gt, results, backend="faster_coco_eval")
    reference = evaluate_coco(gt, results, backend="pycocotools")
    assert len(reference) == 12
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-4, nan_ok=True), key  # percent: 1e-6 of the fraction
