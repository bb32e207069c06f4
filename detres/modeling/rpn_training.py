"""Training-only code of the RPN: anchor labelling, balanced sampling and the losses (inference is in
detres.modeling.rpn). Each labelling rule is one commented line."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torchvision.ops import box_iou

from detres.modeling.losses import rpn_losses
from detres.modeling.matching import IGNORED, sample_balanced

if TYPE_CHECKING:
    from detres.modeling.rpn import RPN

IGNORE_IOA = 0.5  # an anchor with more than half its area inside an ignore (crowd) region is never negative


def ignore_region_mask(boxes: Tensor, regions: Tensor) -> Tensor:
    """[N] bool: boxes with more than IGNORE_IOA of their area inside any of `regions` [K, 4]."""
    if regions.numel() == 0:
        return torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    lt = torch.max(boxes[:, None, :2], regions[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], regions[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6).prod(dim=1)
    return (inter / area[:, None]).max(dim=1).values > IGNORE_IOA


def label_anchors(rpn: RPN, anchors: Tensor, image_size: tuple[int, int],
                  target: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Per-anchor labels (1 object, 0 background, -1 ignored) and matched gt boxes [N, 4] for one image."""
    gt, ignore = target["boxes"], target.get("ignore")
    ignore = torch.zeros(gt.shape[0], dtype=torch.bool, device=gt.device) if ignore is None else ignore
    height, width = image_size
    inside = ((anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] <= width) & (anchors[:, 3] <= height))
    iou = box_iou(gt[~ignore], anchors)
    if rpn.ignore_cross_boundary:
        iou[:, ~inside] = -1.0  # border-crossing anchors take part in no match, not even the best-anchor rule
    matched = rpn.matcher(iou)  # >= 0.7 object, < 0.3 background, each gt's best anchor(s) object
    labels = (matched >= 0).to(torch.int64)  # object if matched, background otherwise ...
    labels[matched == IGNORED] = -1  # ... unless its IoU lies between the two thresholds
    if rpn.ignore_cross_boundary:
        labels[~inside] = -1  # anchors crossing the image border are not used in training (Faster R-CNN)
    labels[(labels == 0) & ignore_region_mask(anchors, gt[ignore])] = -1  # crowd regions: never background
    gt_kept = gt[~ignore]
    boxes = gt_kept[matched.clamp(min=0)] if gt_kept.numel() else torch.zeros_like(anchors)
    return labels, boxes


def rpn_training_losses(rpn: RPN, objectness: Tensor, deltas: Tensor, anchors: Tensor,
                        image_sizes: list[tuple[int, int]], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Objectness and box losses over each image's sampled anchors. objectness [B, N], deltas [B, N, 4]."""
    sampled_logits, sampled_labels, pos_pred, pos_target = [], [], [], []
    for i, (size, target) in enumerate(zip(image_sizes, targets)):
        labels, gt_boxes = label_anchors(rpn, anchors, size, target)
        pos, neg = sample_balanced(labels, num=rpn.batch_size_per_image, positive_fraction=rpn.positive_fraction)
        chosen = torch.cat([pos, neg])
        sampled_logits.append(objectness[i, chosen])
        sampled_labels.append(labels[chosen])
        pos_pred.append(deltas[i, pos])
        pos_target.append(rpn.box_coder.encode(anchors[pos], gt_boxes[pos]))
    return rpn_losses(torch.cat(sampled_logits), torch.cat(sampled_labels), torch.cat(pos_pred),
                      torch.cat(pos_target), beta=rpn.smooth_l1_beta)
