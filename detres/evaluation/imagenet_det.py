"""ImageNet DET mAP@.5 with the ILSVRC devkit's matching rule (eval_detection.m).

The devkit differs from VOC in two ways: each gt has its own IoU threshold, min(0.5, w*h / ((w+10)*(h+10))),
looser for small objects; and a detection chooses only among the gts NOT YET DETECTED, so a second detection on a
found object can still be a true positive for another, unfound object that it overlaps enough. There is no
'difficult' rule; AP is the all-point area (the devkit's VOCap).
"""

from __future__ import annotations

import numpy as np

from detres.evaluation.voc import Detections, GroundTruth, class_ap, group_by_class, iou_one_to_many, score_order

PIXEL_TOLERANCE = 10.0  # the devkit's pixelTolerance in the small-object threshold


def ilsvrc_iou_threshold(boxes: np.ndarray) -> np.ndarray:
    """Per gt box [N, 4]: min(0.5, w*h / ((w+10)*(h+10))) — looser for small boxes (ILSVRC devkit)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return np.minimum(0.5, w * h / ((w + PIXEL_TOLERANCE) * (h + PIXEL_TOLERANCE)))


def match_detections_ilsvrc(dets: Detections, gts: GroundTruth) -> tuple[np.ndarray, np.ndarray]:
    """The ILSVRC rule for one class -> (tp, fp) per detection, in descending score order.

    A detection takes, among its image's gts not yet detected whose IoU with it reaches their own threshold, the
    one with the highest IoU; with none it is a false positive. ImageNet DET has no ignored gts; should records
    of another dataset carry some (crowd, difficult), a detection taking one counts neither way, as in VOC.
    """
    order = score_order(dets)
    detected = {image: np.zeros(len(boxes), bool) for image, (boxes, _) in gts.items()}
    thresholds = {image: ilsvrc_iou_threshold(boxes) for image, (boxes, _) in gts.items()}
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for rank, i in enumerate(order):
        image, _, box = dets[i]
        if image not in gts or len(gts[image][0]) == 0:
            fp[rank] = 1
            continue
        boxes, ignore = gts[image]
        ious = iou_one_to_many(box, boxes)
        eligible = ~detected[image] & (ious >= thresholds[image])  # found objects are out of the running
        if not eligible.any():
            fp[rank] = 1
            continue
        best = int(np.argmax(np.where(eligible, ious, -1.0)))
        detected[image][best] = True
        if not ignore[best]:
            tp[rank] = 1
    return tp, fp


def evaluate_imagenet_det(records, detections, class_names: list[str]) -> dict[str, float]:
    """Per-class AP (all-point, as the ILSVRC devkit) and mAP, percent, keys imagenet_det/..."""
    out, aps = {}, []
    for name, (dets, gts) in zip(class_names, group_by_class(records, detections, len(class_names))):
        ap = class_ap(dets, gts, use_07=False, match=match_detections_ilsvrc)
        out[f"imagenet_det/AP/{name}"] = 100.0 * ap
        if not np.isnan(ap):
            aps.append(ap)
    out["imagenet_det/mAP"] = 100.0 * float(np.mean(aps)) if aps else float("nan")
    return out
