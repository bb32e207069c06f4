"""Matching rules of VOC and ImageNet DET AP, by hand and against literal re-implementations of the devkits.

VOC (VOCevaldet.m): a detection takes the max-IoU gt whether or not it is already detected (then FP) or difficult
(then ignored). ILSVRC (eval_detection.m): a detection takes the max-IoU gt among those NOT YET DETECTED whose IoU
reaches the gt's own threshold min(0.5, wh/((w+10)(h+10))). The hand cases below are built so the two rules give
different AP; the random cases compare detres with straightforward re-implementations written here with exact
fractions (integer boxes on a small grid, so float32 IoUs order exactly as the fractions do).
"""

from __future__ import annotations

import importlib.util
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from detres.data.records import ClassMap, DetRecord
from detres.evaluation.coco import detections_to_coco_results
from detres.evaluation.evaluate import evaluate_records
from detres.evaluation.imagenet_det import evaluate_imagenet_det
from detres.evaluation.voc import evaluate_voc

REPO = Path(__file__).resolve().parents[1]
BIG_A = [0, 0, 100, 100]
BIG_B = [20, 0, 120, 100]  # IoU with A = 2/3: both are above 0.5 for a box between them
BETWEEN = [5, 0, 105, 100]  # IoU with A = 95/105, with B = 85/115: its best gt is A
FAR = [400, 400, 450, 450]


def _record(image_id, boxes, labels, ignore=None):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    ignore = np.zeros(len(boxes), bool) if ignore is None else np.array(ignore, bool)
    return DetRecord(f"{image_id}.jpg", image_id, 500, 500, boxes, np.array(labels, np.int64), ignore)


def _dets(boxes, scores, labels=None):
    labels = [1] * len(boxes) if labels is None else labels
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "scores": np.array(scores, np.float64),
            "labels": np.array(labels, np.int64)}


# --- hand-worked cases ---------------------------------------------------------------------------------------------

def test_second_detection_on_a_found_object_voc_counts_it_false_ilsvrc_gives_it_the_unfound_neighbour():
    records = [_record(1, [BIG_A, BIG_B], [1, 1])]
    detections = {1: _dets([BIG_A, BETWEEN, FAR], [0.9, 0.8, 0.7])}
    # VOC: A (TP), BETWEEN -> max-IoU gt A, already found (FP), FAR (FP): recall .5 .5 .5, precision 1 .5 1/3
    voc = evaluate_voc(records, detections, ["a"], use_07=False)
    assert voc["voc/mAP"] == pytest.approx(100 * 0.5)
    assert evaluate_voc(records, detections, ["a"], use_07=True)["voc07/mAP"] == pytest.approx(100 * 6 / 11)
    # ILSVRC: A (TP), BETWEEN -> A is out, B has IoU 85/115 >= .5 (TP), FAR (FP): recall .5 1 1, precision 1 1 2/3
    ilsvrc = evaluate_imagenet_det(records, detections, ["a"])
    assert ilsvrc["imagenet_det/mAP"] == pytest.approx(100.0)


def test_order_by_score_decides_who_takes_the_object():
    # same boxes, scores swapped: BETWEEN first takes A under both rules; then the exact A box
    records = [_record(1, [BIG_A, BIG_B], [1, 1])]
    detections = {1: _dets([BIG_A, BETWEEN], [0.5, 0.9])}
    # VOC: BETWEEN -> A (TP), A -> A again (FP): AP = .5
    assert evaluate_voc(records, detections, ["a"], use_07=False)["voc/mAP"] == pytest.approx(50.0)
    # ILSVRC: BETWEEN -> A (TP); box A: A is taken, IoU(A, B) = 2/3 >= .5 -> B (TP): AP = 1
    assert evaluate_imagenet_det(records, detections, ["a"])["imagenet_det/mAP"] == pytest.approx(100.0)


def test_voc_difficult_best_match_is_ignored_even_when_a_normal_gt_also_overlaps():
    # the difficult gt is the max-IoU one: the detection counts neither way and does not find the normal gt
    records = [_record(1, [BIG_A, BETWEEN], [1, 1], [True, False])]
    detections = {1: _dets([BIG_A, FAR, BETWEEN], [0.9, 0.8, 0.7])}
    # ranked: ignored, FP (r 0, p 0), TP (r 1, p .5)
    assert evaluate_voc(records, detections, ["a"], use_07=False)["voc/mAP"] == pytest.approx(50.0)


def test_ilsvrc_small_object_threshold_accepts_an_iou_that_voc_rejects():
    # a 10x10 gt has threshold min(.5, 100 / (20 * 20)) = .25; the detection covers it inside a 15x20 box: IoU 1/3
    records = [_record(1, [[0, 0, 100, 90], [95, 80, 105, 90]], [1, 1])]
    detections = {1: _dets([[95, 75, 110, 95]], [1.0])}
    assert evaluate_voc(records, detections, ["a"], use_07=False)["voc/mAP"] == pytest.approx(0.0)
    assert evaluate_imagenet_det(records, detections, ["a"])["imagenet_det/mAP"] == pytest.approx(50.0)


def test_eleven_point_thresholds_are_the_float_steps_of_the_reference_ports():
    # 5 objects, 3 found first with precision 1: recall is 3/5 = 0.6. The reference ports step t by 0.1 in floats,
    # so their 7th point is 0.6000000000000001, which 0.6 does not reach: t = 0 .. .5 count (6/11), like theirs.
    # With 4 of 5 found (0.8 == the float step 0.8) t = 0 .. .8 count (9/11).
    boxes = [[i * 20, 0, i * 20 + 10, 10] for i in range(5)]
    records = [_record(1, boxes, [1] * 5)]
    detections = {1: _dets(boxes[:3], [0.9, 0.8, 0.7])}
    assert evaluate_voc(records, detections, ["a"], use_07=True)["voc07/mAP"] == pytest.approx(100 * 6 / 11)
    detections = {1: _dets(boxes[:4], [0.9, 0.8, 0.7, 0.6])}
    assert evaluate_voc(records, detections, ["a"], use_07=True)["voc07/mAP"] == pytest.approx(100 * 9 / 11)


def test_metrics_entry_point_uses_each_rule():
    records = [_record(1, [BIG_A, BIG_B], [1, 1])]
    detections = {1: _dets([BIG_A, BETWEEN], [0.9, 0.8])}
    out = evaluate_records(records, ClassMap(["a"], ["a"]), detections, ["voc", "imagenet_det"])
    assert out["voc/mAP"] == pytest.approx(50.0) and out["imagenet_det/mAP"] == pytest.approx(100.0)


def _eval_tool():
    spec = importlib.util.spec_from_file_location("eval_det_tool", REPO / "tools" / "eval_det.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_results_file_reproduces_the_metrics_of_the_detections_it_was_written_from(tmp_path):
    # a false positive (image 1) scores 0.123452, a true positive (image 2) 0.123454: ranked TP then FP the
    # AP is .5; a file that rounds both to 0.12345 ties them and the file order (FP first) gives .25
    records = [_record(1, [[0, 0, 10, 10]], [1]), _record(2, [[20, 20, 30, 30]], [1])]
    detections = {1: {"boxes": np.array([[50, 50, 60, 60]], np.float32), "scores": np.array([0.123452], np.float32),
                      "labels": np.array([1])},
                  2: {"boxes": np.array([[20.4, 20.3, 30.2, 29.9]], np.float32),
                      "scores": np.array([0.123454], np.float32), "labels": np.array([1])}}
    class_map = ClassMap(["a"], [7])
    direct = evaluate_records(records, class_map, detections, ["voc", "imagenet_det"])
    assert direct["voc/mAP"] == pytest.approx(50.0)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(detections_to_coco_results(detections, class_map)))
    loaded = _eval_tool().load_results(path, class_map, {1, 2})
    assert evaluate_records(records, class_map, loaded, ["voc", "imagenet_det"]) == direct
    for image_id, det in detections.items():  # boxes and scores come back exactly
        np.testing.assert_array_equal(loaded[image_id]["boxes"], det["boxes"])
        np.testing.assert_array_equal(loaded[image_id]["scores"].astype(np.float32), det["scores"])


# --- literal re-implementations of the devkits ---------------------------------------------------------------------

def _iou(a, b) -> Fraction:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return Fraction(inter, union)


def _curve(flags: list[tuple[int, int]], npos: int) -> tuple[list[Fraction], list[Fraction | None]]:
    """Cumulative recall and precision; precision None where no detection counted yet (the devkit's 0/0)."""
    recall, precision, tp, fp = [], [], 0, 0
    for t, f in flags:
        tp, fp = tp + t, fp + f
        recall.append(Fraction(tp, npos))
        precision.append(Fraction(tp, tp + fp) if tp + fp else None)
    return recall, precision


def _ap_07(recall, precision) -> Fraction:
    total = Fraction(0)
    for t in np.arange(0.0, 1.1, 0.1):  # the ports' float steps, compared with the float recall they compute
        at = [p for r, p in zip(recall, precision) if float(r) >= t and p is not None]
        total += max(at, default=Fraction(0))
    return total / 11


def _ap_area(recall, precision) -> Fraction:
    """VOCap: precision envelope from the right, summed over the recall steps."""
    mrec = [Fraction(0), *recall, Fraction(1)]
    mpre = [Fraction(0), *precision, Fraction(0)]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = mpre[i + 1] if mpre[i] is None else max(mpre[i], mpre[i + 1])
    return sum(((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]),
               Fraction(0))


def _voc_reference(gt, dets, cls, use_07):
    """VOCevaldet.m for class `cls`: gt {image: [(box, label, difficult)]}, dets [(image, box, score, label)]."""
    objects = {img: [(b, d) for b, lab, d in objs if lab == cls] for img, objs in gt.items()}
    npos = sum(1 for objs in objects.values() for _, d in objs if not d)
    if npos == 0:
        return None
    mine = [(img, box, score) for img, box, score, lab in dets if lab == cls]
    mine.sort(key=lambda d: -d[2])  # stable, as Matlab's sort
    found = {img: [False] * len(objs) for img, objs in objects.items()}
    flags = []
    for img, box, _ in mine:
        ovmax, jmax = Fraction(-1), -1
        for j, (gt_box, _) in enumerate(objects.get(img, [])):
            ov = _iou(box, gt_box)
            if ov > 0 and ov > ovmax:
                ovmax, jmax = ov, j
        if ovmax >= Fraction(1, 2):
            if objects[img][jmax][1]:
                flags.append((0, 0))
            elif not found[img][jmax]:
                found[img][jmax] = True
                flags.append((1, 0))
            else:
                flags.append((0, 1))
        else:
            flags.append((0, 1))
    recall, precision = _curve(flags, npos)
    return _ap_07(recall, precision) if use_07 else _ap_area(recall, precision)


def _ilsvrc_threshold(box) -> Fraction:
    w, h = box[2] - box[0], box[3] - box[1]
    return min(Fraction(1, 2), Fraction(w * h, (w + 10) * (h + 10)))


def _ilsvrc_reference(gt, dets, num_classes):
    """eval_detection.m: per image, all its detections by score, each on the best not-yet-detected gt of its
    class above that gt's threshold; then per class, all detections re-sorted by score, VOCap."""
    per_class = {c: [] for c in range(1, num_classes + 1)}
    for img, objs in gt.items():
        detected = [False] * len(objs)
        mine = sorted([d for d in dets if d[0] == img], key=lambda d: -d[2])
        for _, box, score, lab in mine:
            ovmax, kmax = Fraction(-1), -1
            for k, (gt_box, gt_lab, _) in enumerate(objs):
                if gt_lab != lab or detected[k]:
                    continue
                ov = _iou(box, gt_box)
                if ov >= _ilsvrc_threshold(gt_box) and ov > ovmax:
                    ovmax, kmax = ov, k
            if kmax >= 0:
                detected[kmax] = True
            per_class[lab].append((score, (1, 0) if kmax >= 0 else (0, 1)))
    aps = {}
    for c, entries in per_class.items():
        npos = sum(1 for objs in gt.values() for _, lab, _ in objs if lab == c)
        if npos == 0:
            continue
        entries.sort(key=lambda e: -e[0])
        aps[c] = _ap_area(*_curve([flags for _, flags in entries], npos))
    return aps


def _random_box(rng, grid=30):
    x1, y1 = rng.integers(0, grid - 2, 2)
    w, h = rng.integers(2, grid - max(x1, y1) + 1, 2)
    return [int(x1), int(y1), int(min(x1 + w, grid)), int(min(y1 + h, grid))]


def _random_case(seed, *, num_classes, with_difficult):
    """Images with a few gts on a 30-pixel grid; detections: jittered copies, exact duplicates, random boxes,
    scores from a small set (ties)."""
    rng = np.random.default_rng(seed)
    gt, dets = {}, []
    for img in range(int(rng.integers(1, 5))):
        objs = []
        for _ in range(int(rng.integers(0, 6))):
            objs.append((_random_box(rng), int(rng.integers(1, num_classes + 1)),
                         bool(with_difficult and rng.random() < 0.25)))
        gt[img] = objs
        for box, lab, _ in objs:
            for _ in range(int(rng.integers(0, 3))):  # 0, 1 or 2 detections per object (a duplicate)
                jitter = rng.integers(-3, 4, 4)
                moved = [int(v) for v in np.clip(np.array(box) + jitter, 0, 30)]
                if moved[2] > moved[0] and moved[3] > moved[1]:
                    label = lab if rng.random() < 0.9 else int(rng.integers(1, num_classes + 1))
                    dets.append((img, moved, float(rng.integers(1, 10)) / 10, label))
            if rng.random() < 0.2:
                dets.append((img, list(box), float(rng.integers(1, 10)) / 10, lab))  # an exact duplicate
        for _ in range(int(rng.integers(0, 3))):
            dets.append((img, _random_box(rng), float(rng.integers(1, 10)) / 10, int(rng.integers(1, num_classes + 1))))
    return gt, dets


def _as_detres(gt, dets):
    records = [_record(img, [b for b, _, _ in objs], [lab for _, lab, _ in objs], [d for _, _, d in objs])
               for img, objs in gt.items()]
    detections = {}
    for img in gt:
        mine = [d for d in dets if d[0] == img]
        if mine:
            detections[img] = _dets([d[1] for d in mine], [d[2] for d in mine], [d[3] for d in mine])
    return records, detections


@pytest.mark.parametrize("use_07", [True, False])
def test_voc_ap_equals_a_literal_devkit_reimplementation_on_random_cases(use_07):
    num_classes, names = 3, ["a", "b", "c"]
    family = "voc07" if use_07 else "voc"
    compared = nontrivial = 0
    for seed in range(300):
        gt, dets = _random_case(seed, num_classes=num_classes, with_difficult=True)
        records, detections = _as_detres(gt, dets)
        ours = evaluate_voc(records, detections, names, use_07=use_07)
        for c, name in enumerate(names, start=1):
            expected = _voc_reference(gt, dets, c, use_07)
            got = ours[f"{family}/AP/{name}"]
            if expected is None:
                assert np.isnan(got), (seed, name)
                continue
            assert got == pytest.approx(100 * float(expected), abs=1e-9), (seed, name)
            compared += 1
            nontrivial += 0 < expected < 1
    assert compared > 400 and nontrivial > 150  # the random cases exercise partial APs, not only 0 and 1


def test_imagenet_det_ap_equals_a_literal_devkit_reimplementation_on_random_cases():
    num_classes, names = 3, ["a", "b", "c"]
    compared = differs_from_voc = 0
    for seed in range(300):
        gt, dets = _random_case(1000 + seed, num_classes=num_classes, with_difficult=False)
        records, detections = _as_detres(gt, dets)
        ours = evaluate_imagenet_det(records, detections, names)
        voc = evaluate_voc(records, detections, names, use_07=False)
        expected = _ilsvrc_reference(gt, dets, num_classes)
        for c, name in enumerate(names, start=1):
            got = ours[f"imagenet_det/AP/{name}"]
            if c not in expected:
                assert np.isnan(got), (seed, name)
                continue
            assert got == pytest.approx(100 * float(expected[c]), abs=1e-9), (seed, name)
            compared += 1
            differs_from_voc += abs(got - voc[f"voc/AP/{name}"]) > 1e-6
    assert compared > 400 and differs_from_voc > 20  # the cases do separate the two rules
