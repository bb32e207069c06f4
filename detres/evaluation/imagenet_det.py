"""ImageNet DET mAP@.5 with ILSVRC's size-dependent IoU threshold for small objects."""

from __future__ import annotations

import numpy as np

from detres.evaluation.voc import class_ap, group_by_class


def ilsvrc_iou_threshold(boxes: np.ndarray) -> np.ndarray:
    """Per gt box [N, 4]: min(0.5, w*h / ((w+10)*(h+10))) — looser for small boxes (ILSVRC devkit)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return np.minimum(0.5, w * h / ((w + 10.0) * (h + 10.0)))


def evaluate_imagenet_det(records, detections, class_names: list[str]) -> dict[str, float]:
    """Per-class AP (all-point, as the ILSVRC devkit) and mAP, percent, keys imagenet_det/..."""
    out, aps = {}, []
    for name, (dets, gts) in zip(class_names, group_by_class(records, detections, len(class_names))):
        ap = class_ap(dets, gts, use_07=False, iou_thresh_of=ilsvrc_iou_threshold)
        out[f"imagenet_det/AP/{name}"] = 100.0 * ap
        if not np.isnan(ap):
            aps.append(ap)
    out["imagenet_det/mAP"] = 100.0 * float(np.mean(aps)) if aps else float("nan")
    return out
