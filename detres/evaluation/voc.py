"""PASCAL VOC average precision: the VOC2007 11-point metric and the VOC2010+ all-point (area) metric.

Written by hand because no maintained package computes VOC AP; the rules follow the VOC devkit: detections
sorted by score, a detection is a true positive if its IoU with an unmatched gt of its class is >= 0.5,
matching a `difficult` gt counts neither way, a second detection of a matched gt is a false positive.
"""

from __future__ import annotations

import numpy as np


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one XYXY box with [N, 4] boxes (continuous coordinates)."""
    iw = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(min=0)
    ih = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(min=0)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(union, 1e-12)


def average_precision(recall: np.ndarray, precision: np.ndarray, *, use_07: bool) -> float:
    """AP from a precision/recall curve: 11-point interpolation (VOC07) or the area under the monotone curve."""
    if use_07:
        return float(np.mean([precision[recall >= t].max(initial=0.0) for t in np.linspace(0, 1, 11)]))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision made monotone decreasing
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def match_detections(dets: list[tuple[int, float, np.ndarray]], gts: dict[int, tuple[np.ndarray, np.ndarray]],
                     iou_thresh_of=lambda gt_boxes: np.full(len(gt_boxes), 0.5)) -> tuple[np.ndarray, np.ndarray]:
    """One class: dets [(image_id, score, box)], gts {image_id: (boxes [G,4], ignore [G])} -> (tp, fp) per det,
    in descending score order. `iou_thresh_of` gives each gt's IoU threshold (ImageNet DET varies it)."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i][1])
    used = {image: np.zeros(len(boxes), bool) for image, (boxes, _) in gts.items()}
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for rank, i in enumerate(order):
        image, _, box = dets[i]
        boxes, ignore = gts.get(image, (np.zeros((0, 4)), np.zeros(0, bool)))
        if len(boxes) == 0:
            fp[rank] = 1
            continue
        ious = iou_one_to_many(box, boxes)
        ok = ious >= iou_thresh_of(boxes)
        if not ok.any():
            fp[rank] = 1
            continue
        best = int(np.argmax(np.where(ok, ious, -1)))
        if ignore[best]:
            continue  # a difficult object: neither true nor false positive
        if used[image][best]:
            fp[rank] = 1  # duplicate detection
        else:
            used[image][best] = True
            tp[rank] = 1
    return tp, fp


def class_ap(dets, gts, *, use_07: bool, iou_thresh_of=None) -> float:
    """AP of one class; NaN when the class has no non-difficult gt."""
    positives = sum(int((~ign).sum()) for _, ign in gts.values())
    if positives == 0:
        return float("nan")
    kwargs = {} if iou_thresh_of is None else {"iou_thresh_of": iou_thresh_of}
    tp, fp = match_detections(dets, gts, **kwargs)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / positives
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return average_precision(recall, precision, use_07=use_07)


def group_by_class(records, detections, num_classes: int):
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
