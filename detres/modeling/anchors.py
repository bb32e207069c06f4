"""Anchor grid of Faster R-CNN on one feature map."""

from __future__ import annotations

import torch
from torch import Tensor


class AnchorGenerator:
    """`sizes` x `aspect_ratios` anchors at every feature-map position, `stride` input pixels apart.

    Cell anchors follow torchvision's convention (ratio-major order, h/w = ratio, corners rounded, centred on
    x * stride), so that torchvision's FasterRCNN built from detres weights computes the same function.
    """

    def __init__(self, *, sizes: list[float], aspect_ratios: list[float], stride: int) -> None:
        self.stride = stride
        scales = torch.as_tensor(sizes, dtype=torch.float32)
        ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1.0 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
        self.cell_anchors = (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()  # [A, 4]

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map position."""
        return self.cell_anchors.shape[0]

    def grid(self, feat_h: int, feat_w: int, device: torch.device | str = "cpu") -> Tensor:
        """[feat_h * feat_w * A, 4] XYXY input-image pixels, ordered by y, then x, then anchor."""
        ys = torch.arange(feat_h, dtype=torch.float32, device=device) * self.stride
        xs = torch.arange(feat_w, dtype=torch.float32, device=device) * self.stride
        shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)
        return (shifts + self.cell_anchors.to(device).reshape(1, -1, 4)).reshape(-1, 4)
