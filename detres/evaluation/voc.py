"""PASCAL VOC average precision: the VOC2007 11-point metric and the VOC2010+ all-point (area) metric.

Written by hand because no maintained package computes VOC AP; the rules follow the VOC devkit (VOCevaldet.m):
detections in descending score order; each takes the gt of its class in its image with the highest IoU, used or
not, difficult or not; below 0.5 it is a false positive, on a difficult gt it counts neither way, on a gt already
detected it is a false positive (duplicate), else a true positive. ImageNet DET matches differently
(`detres.evaluation.imagenet_det`) and passes its own `match` to `class_ap`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Detections = list[tuple[int, float, np.ndarray]]  # one class: [(image_id, score, box XYXY)]
GroundTruth = dict[int, tuple[np.ndarray, np.ndarray]]  # one class: {image_id: (boxes [G, 4], ignore [G] bool)}
MatchFn = Callable[[Detections, GroundTruth], tuple[np.ndarray, np.ndarray]]
# The devkit's `t = 0:0.1:1` as its Python ports (py-faster-rcnn's and Detectron's voc_eval) write it: float steps,
# so t = 0.30000000000000004, 0.6000000000000001 and 0.7000000000000001; a recall of exactly 3/10 does not reach
# the third. Kept on purpose, so that detres's VOC07 numbers equal those of the implementations people compare with.
ELEVEN_RECALLS = np.arange(0.0, 1.1, 0.1)


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one XYXY box with [N, 4] boxes (continuous coordinates)."""
    iw = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(min=0)
    ih = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(min=0)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(union, 1e-12)


def average_precision(recall: np.ndarray, precision: np.ndarray, *, use_07: bool) -> float:
    """AP from a precision/recall curve: 11-point interpolation (VOC07) or the area under the monotone curve."""
    if use_07:  # VOC2007: mean over t = 0, .1, ..., 1 of the best precision at recall >= t (0 if never reached)
        return float(np.mean([precision[recall >= t].max(initial=0.0) for t in ELEVEN_RECALLS]))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision made monotone decreasing
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def score_order(dets: Detections) -> list[int]:
    """Indices of `dets` by descending score; ties keep their given order (the devkits' stable sort)."""
    return sorted(range(len(dets)), key=lambda i: -dets[i][1])


def _gt_of(gts: GroundTruth, image: int) -> tuple[np.ndarray, np.ndarray]:
    return gts.get(image, (np.zeros((0, 4), np.float32), np.zeros(0, bool)))


def match_detections(dets: Detections, gts: GroundTruth, *, iou_thresh: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The VOC rule for one class -> (tp, fp) per detection, in descending score order.

    A detection takes the max-IoU gt of its image regardless of whether that gt is already detected; so a second
    detection of a found object is a false positive even when another, unfound object also overlaps it >= 0.5.
    """
    order = score_order(dets)
    used = {image: np.zeros(len(boxes), bool) for image, (boxes, _) in gts.items()}
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for rank, i in enumerate(order):
        image, _, box = dets[i]
        boxes, ignore = _gt_of(gts, image)
        ious = iou_one_to_many(box, boxes)
        if len(boxes) == 0 or ious.max() < iou_thresh:
            fp[rank] = 1  # no gt of this class overlaps enough
            continue
        best = int(np.argmax(ious))  # the first of equal maxima, as the devkit's strict '>' scan
        if ignore[best]:
            continue  # a difficult object: neither true nor false positive
        if used[image][best]:
            fp[rank] = 1  # duplicate detection of an object already found
        else:
            used[image][best] = True
            tp[rank] = 1
    return tp, fp


def class_ap(dets: Detections, gts: GroundTruth, *, use_07: bool, match: MatchFn = match_detections) -> float:
    """AP of one class with the matching rule `match`; NaN when the class has no non-ignored gt."""
    positives = sum(int((~ign).sum()) for _, ign in gts.values())
    if positives == 0:
        return float("nan")
    tp, fp = match(dets, gts)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / positives
    # 0 where only ignored detections precede (the devkit gets 0/0 = NaN there, which its max() skips)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return average_precision(recall, precision, use_07=use_07)


def group_by_class(records, detections, num_classes: int) -> list[tuple[Detections, GroundTruth]]:
    """Per class label c in 1..C: (dets [(image_id, score, box)], gts {image_id: (boxes, ignore)})."""
    per_class = []
    for c in range(1, num_classes + 1):
        gts = {r.image_id: (r.boxes[r.labels == c], r.ignore[r.labels == c]) for r in records}
        dets = [(image_id, float(s), b) for image_id, d in detections.items()
                for b, s, lab in zip(d["boxes"], d["scores"], d["labels"]) if lab == c]
        per_class.append((dets, gts))
    return per_class


def evaluate_voc(records, detections, class_names: list[str], *, use_07: bool) -> dict[str, float]:
    """Per-class AP and mAP (percent) with keys voc07/... (11-point) or voc/... (all-point)."""
    family = "voc07" if use_07 else "voc"
    out, aps = {}, []
    for name, (dets, gts) in zip(class_names, group_by_class(records, detections, len(class_names))):
        ap = class_ap(dets, gts, use_07=use_07)
        out[f"{family}/AP/{name}"] = 100.0 * ap
        if not np.isnan(ap):
            aps.append(ap)
    out[f"{family}/mAP"] = 100.0 * float(np.mean(aps)) if aps else float("nan")
    return out


def paper_table_row(metrics: dict[str, float], class_names: list[str], family: str = "voc07") -> str:
    """The layout of the paper's Tables 10/11: mAP, then one column per class."""
    header = ["mAP", *class_names]
    values = [metrics[f"{family}/mAP"], *(metrics[f"{family}/AP/{n}"] for n in class_names)]
    width = max(6, *(len(h) for h in header))
    return (" ".join(f"{h:>{width}}" for h in header) + "\n" + " ".join(f"{v:>{width}.1f}" for v in values))
