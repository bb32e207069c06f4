"""Training-only code of the C4 RoI head: proposal labelling, balanced sampling and the Fast R-CNN losses
(inference is in detres.modeling.roi_heads). Each labelling rule is one commented line."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torchvision.ops import box_iou

from detres.modeling.losses import fast_rcnn_losses
from detres.modeling.matching import IGNORED, sample_balanced
from detres.modeling.rpn_training import ignore_region_mask

if TYPE_CHECKING:
    from detres.modeling.roi_heads import C4RoIHead


@torch.no_grad()
def label_and_sample(head: C4RoIHead, proposals: Tensor,
                     target: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """One image -> (sampled RoIs [S, 4], labels [S] in 0..C, regression targets [S, 4])."""
    gt, labels_gt = target["boxes"], target["labels"]
    ignore = target.get("ignore")
    ignore = torch.zeros(gt.shape[0], dtype=torch.bool, device=gt.device) if ignore is None else ignore
    gt_kept, labels_kept = gt[~ignore], labels_gt[~ignore]
    proposals = torch.cat([proposals, gt_kept])  # ground-truth boxes join the proposals in training
    iou = box_iou(gt_kept, proposals)
    matched = head.matcher(iou)  # IoU >= 0.5 foreground, < 0.5 background
    max_iou = iou.max(dim=0).values if gt_kept.numel() else torch.zeros(len(proposals), device=gt.device)
    labels = (matched >= 0).to(torch.int64)
    labels[matched == IGNORED] = -1  # between the background and foreground thresholds, when they differ
    labels[max_iou < head.bg_iou_thresh_lo] = -1  # background only in [lo, 0.5) (Fast R-CNN: lo = 0.1 option)
    labels[(labels == 0) & ignore_region_mask(proposals, gt[ignore])] = -1  # inside crowd regions: unused
    pos, neg = sample_balanced(labels, num=head.batch_size_per_image, positive_fraction=head.positive_fraction)
    chosen = torch.cat([pos, neg])
    rois = proposals[chosen]
    cls = torch.zeros(len(chosen), dtype=torch.int64, device=gt.device)
    targets = torch.zeros(len(chosen), 4, dtype=rois.dtype, device=gt.device)
    if len(pos):
        matched_gt = matched[pos]
        cls[: len(pos)] = labels_kept[matched_gt]
        targets[: len(pos)] = head.box_coder.encode(rois[: len(pos)], gt_kept[matched_gt])
    return rois, cls, targets


def roi_head_training_losses(head: C4RoIHead, features: Tensor, proposals: list[Tensor],
                             targets: list[dict[str, Tensor]], image_sizes: list[tuple[int, int]]) -> dict[str, Tensor]:
    """Sample each image's RoIs, run them through the head (the same `forward_boxes` as inference), and the losses."""
    sampled = [label_and_sample(head, p, t) for p, t in zip(proposals, targets)]
    rois = [s[0] for s in sampled]
    class_logits, box_deltas = head.forward_boxes(features, rois, image_sizes)
    labels = torch.cat([s[1] for s in sampled])
    reg_targets = torch.cat([s[2] for s in sampled])
    return fast_rcnn_losses(class_logits, box_deltas, labels, reg_targets, beta=head.smooth_l1_beta)
