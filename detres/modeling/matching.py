"""Matching anchors/proposals to ground truth by IoU, and balanced positive/negative sampling."""

from __future__ import annotations

import torch
from torch import Tensor

BACKGROUND = -1  # matched index of a box whose best IoU is below `low`
IGNORED = -2  # matched index of a box between `low` and `high`: neither positive nor negative


class Matcher:
    """Assign each of N boxes its best ground truth by IoU: >= high matched, < low background, else ignored.

    allow_low_quality: each ground truth also claims the box(es) with its highest IoU, even below `high`
    (Faster R-CNN's rule that every object gets at least one anchor).
    """

    def __init__(self, *, high: float, low: float, allow_low_quality: bool) -> None:
        if low > high:
            raise ValueError(f"Matcher: low={low} must not exceed high={high}")
        self.high, self.low, self.allow_low_quality = high, low, allow_low_quality

    def __call__(self, iou: Tensor) -> Tensor:
        """iou: [G, N] -> [N] int64: gt index >= 0, BACKGROUND (-1) or IGNORED (-2)."""
        if iou.shape[0] == 0:
            return torch.full((iou.shape[1],), BACKGROUND, dtype=torch.int64, device=iou.device)
        best_iou, matched = iou.max(dim=0)
        result = matched.clone()
        result[best_iou < self.high] = IGNORED
        result[best_iou < self.low] = BACKGROUND
        if self.allow_low_quality:
            best_per_gt = iou.max(dim=1, keepdim=True).values
            # ties count: every box reaching a gt's best (positive) IoU is matched to its own best gt
            claimed = ((iou == best_per_gt) & (best_per_gt > 0)).any(dim=0)
            result[claimed] = matched[claimed]
        return result


def sample_balanced(labels: Tensor, *, num: int, positive_fraction: float,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Pick at most num*positive_fraction positives (label 1), fill up to `num` with negatives (label 0).

    labels: [N] with 1 positive, 0 negative, -1 ignored. Returns (pos_idx, neg_idx), chosen uniformly at random.
    """
    positive = torch.nonzero(labels == 1).squeeze(1)
    negative = torch.nonzero(labels == 0).squeeze(1)
    num_pos = min(positive.numel(), int(num * positive_fraction))
    num_neg = min(negative.numel(), num - num_pos)
    device = labels.device
    perm_pos = torch.randperm(positive.numel(), generator=generator, device="cpu")[:num_pos].to(device)
    perm_neg = torch.randperm(negative.numel(), generator=generator, device="cpu")[:num_neg].to(device)
    return positive[perm_pos], negative[perm_neg]
