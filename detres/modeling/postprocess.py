"""Inference-side decoding of the Fast R-CNN outputs: class scores, per-class boxes, NMS, top-k."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from detres.boxes import BoxCoder


def decode_predictions(class_logits: Tensor, box_deltas: Tensor, proposals: Tensor, box_coder: BoxCoder,
                       image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """One image's RoIs -> (scores [R, C+1] softmax, boxes [R, C+1, 4] per-class, clipped to the image)."""
    scores = F.softmax(class_logits.float(), dim=1)
    boxes = box_coder.decode(box_deltas.float(), proposals.float())
    boxes = clip_boxes_to_image(boxes.reshape(-1, 4), image_size).reshape(boxes.shape[0], -1, 4)
    return scores, boxes


def select_detections(scores: Tensor, boxes: Tensor, *, score_thresh: float, nms_thresh: float,
                      detections_per_img: int) -> dict[str, Tensor]:
    """scores [R, C+1], boxes [R, C+1, 4] -> dict(boxes [K, 4], scores [K], labels [K] in 1..C).

    Column 0 (background) is dropped; every (RoI, class) pair above the threshold is a candidate; per-class
    NMS is one batched_nms call (classes offset apart), then the `detections_per_img` best are kept.
    """
    num_classes = scores.shape[1]
    labels = torch.arange(num_classes, device=scores.device).expand_as(scores)
    scores, boxes, labels = scores[:, 1:].reshape(-1), boxes[:, 1:].reshape(-1, 4), labels[:, 1:].reshape(-1)
    keep = torch.nonzero(scores > score_thresh).squeeze(1)
    scores, boxes, labels = scores[keep], boxes[keep], labels[keep]
    keep = remove_small_boxes(boxes, 1e-2)
    scores, boxes, labels = scores[keep], boxes[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
