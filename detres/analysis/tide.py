"""Error attribution in the manner of TIDE (Bolya et al., ECCV 2020): each false positive and each missed object
gets one error type, and dAP is the AP50 gained when the errors of one type alone are fixed.

Written here because TIDE (the library) has been unmaintained since 2020. Thresholds as TIDE: foreground IoU 0.5,
background IoU 0.1. True positives are COCOeval's matches at IoU 0.5; the AP is COCOeval's, re-run on the fixed
detections (or ground truth, for missed objects).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO

from detres.analysis.cocoeval_runs import coco_from_dataset, detections_coco, mean_ap, run_cocoeval
from detres.analysis.pr import Matches

FG_IOU, BG_IOU = 0.5, 0.1
ERROR_TYPES = ["cls", "loc", "both", "dupe", "bkg", "miss"]
# The rules, checked in this order for a detection that COCOeval did not match at IoU 0.5 (IoU with non-ignored gt):
# bkg:  IoU <= 0.1 with every ground truth: a box on nothing            fix: remove the detection
# cls:  IoU >= 0.5 with a ground truth of another class: wrong class    fix: take its class (remove if gt taken)
# dupe: IoU >= 0.5 with a ground truth of its class already matched     fix: remove the detection
# loc:  0.1 <= IoU < 0.5 with a ground truth of its class: badly placed fix: take its box (remove if gt taken)
# both: 0.1 <= IoU < 0.5 with a ground truth of another class only      fix: remove the detection
# miss: a ground truth neither matched nor the target of a cls/loc error fix: remove the ground truth


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of XYXY boxes [N, 4] x [M, 4] (continuous coordinates, as COCOeval)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def _xyxy(bbox: list[float]) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


@dataclass
class Attribution:
    """det_type: {det index in the results list: tp | ignored | one of ERROR_TYPES[:5]}; det_target: {det index:
    the gt id of its cls/loc error}; gt_type: {gt id: matched | missed | covered (a cls/loc target) | ignored}."""

    det_type: dict[int, str]
    det_target: dict[int, int]
    gt_type: dict[int, str]

    def counts(self) -> dict[str, int]:
        dets = list(self.det_type.values())
        return {**{t: dets.count(t) for t in ERROR_TYPES[:5]}, "miss": list(self.gt_type.values()).count("missed")}


def attribute_errors(gt: COCO, results: list[dict], m: Matches) -> Attribution:
    """Error type of every evaluated detection and ground truth; `m` holds COCOeval's IoU-0.5 matches of
    `results` (detection ids are 1 + the index in `results`)."""
    det_type: dict[int, str] = {}
    det_target: dict[int, int] = {}
    gt_type = {int(g): ("ignored" if ign else "missed") for g, ign in zip(m.gt_id, m.gt_ignored)}
    for g in m.det_match[(m.det_match > 0) & ~m.det_ignored]:
        gt_type[int(g)] = "matched"
    by_image: dict[int, list[int]] = {}
    for j in range(len(m.det_id)):
        by_image.setdefault(int(m.det_image[j]), []).append(j)
    for image, js in by_image.items():
        anns = [a for a in gt.imgToAnns.get(image, []) if gt_type.get(a["id"]) not in (None, "ignored")]
        boxes = np.array([_xyxy(a["bbox"]) for a in anns], np.float64).reshape(-1, 4)
        cats = np.array([a["category_id"] for a in anns])
        js = sorted(js, key=lambda j: -m.det_score[j])
        det_boxes = np.array([_xyxy(results[int(m.det_id[j]) - 1]["bbox"]) for j in js], np.float64).reshape(-1, 4)
        ious = iou_matrix(det_boxes, boxes)
        for row, j in enumerate(js):
            index = int(m.det_id[j]) - 1
            if m.det_ignored[j]:
                det_type[index] = "ignored"
                continue
            if m.det_match[j] > 0:
                det_type[index] = "tp"
                continue
            iou = ious[row]
            same = cats == m.det_cat[j]
            iou_same, iou_other = np.where(same, iou, 0.0), np.where(same, 0.0, iou)
            if not len(iou) or iou.max() <= BG_IOU:
                det_type[index] = "bkg"
            elif iou_other.max() >= FG_IOU:
                det_type[index], det_target[index] = "cls", int(anns[int(iou_other.argmax())]["id"])
            elif iou_same.max() >= FG_IOU:
                det_type[index] = "dupe"
            elif iou_same.max() >= BG_IOU:
                det_type[index], det_target[index] = "loc", int(anns[int(iou_same.argmax())]["id"])
            else:
                det_type[index] = "both"
    for target in det_target.values():  # a cls/loc error already accounts for its object: it is not also missed
        if gt_type[target] == "missed":
            gt_type[target] = "covered"
    return Attribution(det_type, det_target, gt_type)


def _fixed(gt: COCO, results: list[dict], a: Attribution, kind: str) -> tuple[COCO, list[dict]]:
    """(ground truth, results) with the errors of `kind` fixed as the rules above say."""
    if kind == "miss":
        missed = {g for g, t in a.gt_type.items() if t == "missed"}
        anns = [x for x in gt.dataset["annotations"] if x["id"] not in missed]
        return coco_from_dataset({**gt.dataset, "annotations": anns}), results
    taken = {g for g, t in a.gt_type.items() if t == "matched"}
    out = []
    for index in sorted(range(len(results)), key=lambda i: -results[i]["score"]):
        r = results[index]
        if a.det_type.get(index) != kind:
            out.append(r)
        elif kind in ("cls", "loc") and a.det_target[index] not in taken:
            target = gt.anns[a.det_target[index]]
            taken.add(target["id"])
            out.append({**r, "category_id": target["category_id"]} if kind == "cls" else {**r, "bbox": target["bbox"]})
    return gt, out


def ap50(gt: COCO, results: list[dict]) -> float:
    """COCOeval's AP at IoU 0.5 (all areas, maxDets 100), mean over categories with ground truth; in [0, 1]."""
    return mean_ap(run_cocoeval(gt, detections_coco(gt, results), iou_thrs=[FG_IOU]).eval["precision"])


def error_dap(gt: COCO, results: list[dict], a: Attribution) -> dict[str, float]:
    """{error type: AP50 gained by fixing that type alone, in AP points (percent)} and the base AP50 as 'base'."""
    base = ap50(gt, results)
    out = {"base": 100.0 * base}
    for kind in ERROR_TYPES:
        fixed_gt, fixed = _fixed(gt, results, a, kind)
        out[kind] = 100.0 * (ap50(fixed_gt, fixed) - base)
    return out
