"""ImageNet localization error (ILSVRC, Tables 13/14 of the paper): top-1 / top-5 and the GT-class oracle.

A guess is (class, box). An image is localized when one of its first k guesses has a class among the image's
ground-truth classes and IoU >= 0.5 with a ground-truth box of that class. The "LOC error on GT class" gives
the true class and judges the box alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

IOU_THRESH = 0.5


def guess_is_correct(label: int, box: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                     iou_thresh: float = IOU_THRESH) -> bool:
    """label: int; box: [4] XYXY; gt_boxes: [G, 4]; gt_labels: [G] -> right class and IoU >= thresh with one of
    that class's ground-truth boxes."""
    same = np.asarray(gt_labels) == label
    if not same.any():
        return False
    iou = box_iou(torch.as_tensor(np.asarray(box, np.float32)).reshape(1, 4),
                  torch.as_tensor(np.asarray(gt_boxes, np.float32)[same]).reshape(-1, 4))
    return bool((iou >= iou_thresh).any())


def localization_errors(
    guesses: Mapping[int, Sequence[tuple[int, np.ndarray]]],
    ground_truth: Mapping[int, tuple[np.ndarray, np.ndarray]],
    gt_class_boxes: Mapping[int, np.ndarray] | None = None,
) -> dict[str, float]:
    """Percent errors over the images of `ground_truth`.

    guesses[image_id]: ranked list of (label, box [4] XYXY original pixels), best first (5 used for top-5);
    ground_truth[image_id]: (boxes [G, 4] XYXY, labels [G]); gt_class_boxes[image_id]: the box predicted for
    the image's true class (the first gt label). An image with no guess counts as an error.
    Returns loc/top1_err and loc/top5_err (when guesses is not empty) and loc/gt_cls_err (when gt_class_boxes given).
    """
    if not ground_truth:
        raise ValueError("localization_errors: no ground-truth images")
    out: dict[str, float] = {}
    n = len(ground_truth)
    if guesses:
        top1 = top5 = 0
        for image_id, (gt_boxes, gt_labels) in ground_truth.items():
            hits = [guess_is_correct(int(c), b, gt_boxes, gt_labels) for c, b in list(guesses.get(image_id, []))[:5]]
            top1 += bool(hits[:1] and hits[0])
            top5 += any(hits)
        out["loc/top1_err"] = 100.0 * (1 - top1 / n)
        out["loc/top5_err"] = 100.0 * (1 - top5 / n)
    if gt_class_boxes is not None:
        right = 0
        for image_id, (gt_boxes, gt_labels) in ground_truth.items():
            box = gt_class_boxes.get(image_id)
            right += box is not None and guess_is_correct(int(gt_labels[0]), box, gt_boxes, gt_labels)
        out["loc/gt_cls_err"] = 100.0 * (1 - right / n)
    return out
