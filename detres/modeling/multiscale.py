"""Multi-scale testing (App. B, after NoC/SPPnet): conv4_x on an image pyramid, two adjacent scales per RoI, maxout."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

TARGET_SIDE = 224.0  # ImageNet's pre-training crop: conv5_x works best on RoIs of about the size it was trained on


def pyramid_factors(image_size: tuple[int, int], pyramid: list[int], max_ratio: float) -> list[float]:
    """Resize factor of each pyramid level for an input of image_size (h, w): shorter side to s, longer side
    capped at s * max_ratio (the training cap ratio, e.g. 1000/600)."""
    short, long = min(image_size), max(image_size)
    return [min(s / short, s * max_ratio / long) for s in pyramid]


def select_scale_pairs(boxes: Tensor, factors: list[float], target: float = TARGET_SIDE) -> tuple[Tensor, Tensor]:
    """For each RoI [N, 4] (input pixels), the indices (k1, k2) of two adjacent pyramid levels.

    Rule (target = the pre-training crop side, 224 for ImageNet): k1 is the level where the RoI's side
    sqrt(w*h) is closest to the target in log scale (|log(side/target)|; ties to the larger level). k2 is its
    neighbour on the side where the RoI is farther from the target: the next larger level if the RoI is smaller
    than the target at k1 (or exactly its size), the next smaller level if larger. At an end of the pyramid the
    only neighbour is used; with one level, k1 = k2. Factors must be increasing.
    """
    side = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3).mul((boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)).sqrt()
    f = torch.as_tensor(factors, dtype=side.dtype, device=side.device)
    dist = (torch.log(side[:, None] * f[None, :]) - math.log(target)).abs()
    levels = len(factors)
    # ties (to rounding) go to the larger level: a bias far below any real difference favours it
    k1 = (dist - 1e-6 * torch.arange(levels, dtype=dist.dtype, device=dist.device)).argmin(dim=1)
    smaller_than_target = side * f[k1] <= target
    k2 = torch.where(smaller_than_target, k1 + 1, k1 - 1)
    k2 = torch.where(k2 >= levels, k1 - 1, k2)
    k2 = torch.where(k2 < 0, k1 + 1, k2)
    return k1, k2.clamp(0, levels - 1)


def resize_batch(batch: Tensor, factor: float, size_divisibility: int) -> Tensor:
    """[B, 3, H, W] padded batch -> resized by `factor` (bilinear), padded up to a multiple of the divisibility."""
    if factor == 1.0:
        return batch
    h, w = round(batch.shape[2] * factor), round(batch.shape[3] * factor)
    out = F.interpolate(batch, size=(h, w), mode="bilinear", align_corners=False)
    pad_h, pad_w = (-h) % size_divisibility, (-w) % size_divisibility
    return F.pad(out, (0, pad_w, 0, pad_h)) if pad_h or pad_w else out


RPN_SCALE_CHOICES = ("all", "adjacent")


def rpn_levels(factors: list[float], which: str) -> list[int]:
    """The pyramid levels (indices into increasing `factors`) whose RPN proposes in multi-scale RPN testing.

    all: every level. adjacent: the two levels around the test scale (the input, factor 1): the level nearest it
    in log scale and, of its neighbours, the nearer one (ties to the larger scale); one level if the pyramid has one.
    """
    if which not in RPN_SCALE_CHOICES:
        raise ValueError(f"which must be one of {RPN_SCALE_CHOICES}, got {which!r}")
    if which == "all" or len(factors) == 1:
        return list(range(len(factors)))
    dist = [abs(math.log(f)) for f in factors]
    k1 = min(range(len(factors)), key=lambda k: (dist[k], -k))
    neighbours = [k for k in (k1 - 1, k1 + 1) if 0 <= k < len(factors)]
    k2 = min(neighbours, key=lambda k: (dist[k], -k))
    return sorted((k1, k2))
