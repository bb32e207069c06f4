"""Box voting (App. B, after Gidaris & Komodakis): a kept box becomes the score-weighted mean of its neighbours."""

from __future__ import annotations

from torch import Tensor
from torchvision.ops import box_iou


def box_voting(kept_boxes: Tensor, kept_labels: Tensor, pool_boxes: Tensor, pool_scores: Tensor,
               pool_labels: Tensor, *, iou_thresh: float) -> Tensor:
    """Each kept box [K, 4] -> score-weighted average of the pool's boxes [M, 4] of the same label with IoU >= thresh.

    The pool holds the candidates before NMS (the kept box is among them, so every kept box has a voter);
    scores are not changed by voting. One [K, M] matrix product, no Python loop over boxes.
    """
    if kept_boxes.numel() == 0:
        return kept_boxes
    same = kept_labels[:, None] == pool_labels[None, :]
    weights = ((box_iou(kept_boxes, pool_boxes) >= iou_thresh) & same).to(pool_scores.dtype) * pool_scores[None, :]
    total = weights.sum(dim=1, keepdim=True)
    voted = weights @ pool_boxes / total.clamp(min=1e-12)
    return voted.where(total > 0, kept_boxes)  # a box without voters (not in the pool) stays as it was
