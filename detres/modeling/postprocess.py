"""Inference-side decoding of the Fast R-CNN outputs: class scores, per-class boxes, NMS, top-k."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from detres.boxes import BoxCoder

ClassNMS = Callable[[Tensor, Tensor, Tensor, float], Tensor]  # (boxes, scores, labels, iou) -> kept, best first


def decode_predictions(class_logits: Tensor, box_deltas: Tensor, proposals: Tensor, box_coder: BoxCoder,
                       image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """One image's RoIs -> (scores [R, C+1] softmax, boxes [R, C+1, 4] per-class, clipped to the image)."""
    scores = F.softmax(class_logits.float(), dim=1)
    boxes = box_coder.decode(box_deltas.float(), proposals.float())
    boxes = clip_boxes_to_image(boxes.reshape(-1, 4), image_size).reshape(boxes.shape[0], -1, 4)
    return scores, boxes


def class_candidates(scores: Tensor, boxes: Tensor, score_thresh: float) -> tuple[Tensor, Tensor, Tensor]:
    """scores [R, C+1], boxes [R, C+1, 4] -> every (RoI, object class) pair above the threshold, flattened:
    (scores [N], boxes [N, 4], labels [N] in 1..C). Column 0 (background) is dropped."""
    labels = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    scores, boxes, labels = scores[:, 1:].reshape(-1), boxes[:, 1:].reshape(-1, 4), labels[:, 1:].reshape(-1)
    keep = torch.nonzero(scores > score_thresh).squeeze(1)
    return scores[keep], boxes[keep], labels[keep]


def select_detections(scores: Tensor, boxes: Tensor, *, score_thresh: float, nms_thresh: float,
                      detections_per_img: int, class_nms: ClassNMS = batched_nms) -> dict[str, Tensor]:
    """scores [R, C+1], boxes [R, C+1, 4] -> dict(boxes [K, 4], scores [K], labels [K] in 1..C).

    The candidates above the threshold, tiny boxes dropped, per-class NMS in one `class_nms` call (torchvision's
    batched_nms; the exported graph passes detres.ops.batched_nms's traceable form), then the best
    `detections_per_img`.
    """
    scores, boxes, labels = class_candidates(scores, boxes, score_thresh)
    keep = remove_small_boxes(boxes, 1e-2)
    scores, boxes, labels = scores[keep], boxes[keep], labels[keep]
    keep = class_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
