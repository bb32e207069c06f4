"""Metrics: ground truth scores 100, COCO equals a direct pycocotools run, VOC AP and the ILSVRC rule by hand."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detres.data.coco import read_coco
from detres.data.records import ClassMap, DetRecord
from detres.evaluation.coco import detections_to_coco_results
from detres.evaluation.evaluate import evaluate_records
from detres.evaluation.imagenet_det import ilsvrc_iou_threshold
from detres.evaluation.voc import evaluate_voc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = make_shapes.generate(tmp_path_factory.mktemp("shapes"), seed=5, num_train=2, num_val=30)
    ann = root / "coco/annotations/instances_val.json"
    records, class_map = read_coco(ann, root / "coco/val")
    return ann, records, class_map


def _gt_as_detections(records):
    return {r.image_id: {"boxes": r.boxes, "scores": np.ones(len(r.boxes)), "labels": r.labels} for r in records}


def test_ground_truth_as_detections_scores_100_everywhere(shapes):
    ann, records, class_map = shapes
    metrics = evaluate_records(records, class_map, _gt_as_detections(records), ["coco", "voc07", "voc",
                                                                                  "imagenet_det"], str(ann))
    for key in ("coco/AP", "coco/AP50", "coco/AP75", "voc07/mAP", "voc/mAP", "imagenet_det/mAP"):
        assert metrics[key] == pytest.approx(100.0), key


def _noisy(records, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for r in records:
        boxes = r.boxes + rng.normal(0, 3, r.boxes.shape).astype(np.float32)
        extra = rng.uniform(0, 100, (2, 2)).astype(np.float32)
        boxes = np.concatenate([boxes, np.concatenate([extra, extra + 30], 1)])
        labels = np.concatenate([r.labels, rng.integers(1, 7, 2)])
        out[r.image_id] = {"boxes": boxes, "scores": rng.uniform(0.1, 1, len(boxes)), "labels": labels}
    return out


def test_coco_numbers_equal_a_direct_pycocotools_run(shapes, tmp_path):
    ann, records, class_map = shapes
    detections = _noisy(records)
    ours = evaluate_records(records, class_map, detections, ["coco"], str(ann))
    results = detections_to_coco_results(detections, class_map)
    (tmp_path / "res.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        evaluator = COCOeval(gt, gt.loadRes(str(tmp_path / "res.json")), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert ours["coco/AP"] == pytest.approx(100 * evaluator.stats[0], abs=1e-9)
    assert ours["coco/AP50"] == pytest.approx(100 * evaluator.stats[1], abs=1e-9)
    assert ours["coco/ARm"] == pytest.approx(100 * evaluator.stats[10], abs=1e-9)
    assert 5 < ours["coco/AP"] < 95  # the noise makes it a real test


def test_eval_tool_on_a_results_file_writes_the_metrics_json(shapes, tmp_path):
    ann, records, class_map = shapes
    (tmp_path / "res.json").write_text(json.dumps(detections_to_coco_results(_gt_as_detections(records), class_map)))
    done = subprocess.run([sys.executable, str(REPO / "tools/eval_det.py"), "--gt", str(ann), "--results",
                           str(tmp_path / "res.json"), "--metric", "voc07", "--out", str(tmp_path / "m.json")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "m.json").read_text())["voc07/mAP"] == pytest.approx(100.0)


def _record(boxes, labels, ignore=None):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return DetRecord("x.jpg", 1, 100, 100, boxes, np.array(labels, np.int64),
                     np.zeros(len(boxes), bool) if ignore is None else np.array(ignore))


def test_voc_ap_by_hand_with_duplicates_and_difficult():
    # gts: two objects of class 1, one difficult object of class 1
    record = _record([[0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]], [1, 1, 1], [False, False, True])
    dets = {1: {"boxes": np.array([[0, 0, 10, 10],        # 0.9 TP
                                   [0, 0, 10, 10],        # 0.8 duplicate -> FP
                                   [80, 80, 90, 90],      # 0.7 matches the difficult gt -> ignored
                                   [50, 50, 60, 60]],     # 0.6 TP
                                  np.float32),
                "scores": np.array([0.9, 0.8, 0.7, 0.6]), "labels": np.array([1, 1, 1, 1])}}
    names = ["a"]
    # ranked: TP (r=.5, p=1), FP (r=.5, p=.5), TP (r=1, p=2/3)
    all_point = evaluate_voc([record], dets, names, use_07=False)["voc/mAP"]
    assert all_point == pytest.approx(100 * (0.5 * 1 + 0.5 * 2 / 3))
    eleven = evaluate_voc([record], dets, names, use_07=True)["voc07/mAP"]
    assert eleven == pytest.approx(100 * (6 * 1 + 5 * 2 / 3) / 11)


def test_ilsvrc_threshold_is_looser_for_small_boxes():
    thresholds = ilsvrc_iou_threshold(np.array([[0, 0, 10, 10], [0, 0, 200, 100]], np.float32))
    assert thresholds[0] == pytest.approx(100 / 400)  # 10x10: min(0.5, 100 / (20*20)) = 0.25
    assert thresholds[1] == pytest.approx(0.5)
    record = _record([[0, 0, 10, 10]], [1])
    shifted = {1: {"boxes": np.array([[3, 3, 13, 13]], np.float32), "scores": np.array([1.0]), "labels": [1]}}
    cm = ClassMap(["a"], [1])
    assert evaluate_records([record], cm, shifted, ["imagenet_det"])["imagenet_det/mAP"] == pytest.approx(100.0)
    assert evaluate_records([record], cm, shifted, ["voc"])["voc/mAP"] == pytest.approx(0.0)  # IoU 49/151
