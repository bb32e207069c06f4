"""RoI pooling of the C4 head, the one op the eager model and the exported graph run differently.

`RoIPooling` is the eager op: detres.ops' CPU kernels, bit-identical to torchvision's roi_pool / roi_align and
faster. `TraceableRoIPooling` computes the same numbers with torchvision's ops on an explicit [R, 5] RoI tensor,
which the ONNX exporter translates (MaxRoiPool, RoiAlign with half_pixel); detres.deploy.graph swaps it in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import roi_align, roi_pool

from detres.ops.roi_align_matrix import roi_align_matrix
from detres.ops.roi_max_pool import roi_max_pool

POOLERS = ("roi_pool", "roi_align")


@dataclass
class RoIPooling:
    """features [B, C, H, W], B x [K_i, 4] input-pixel boxes -> [sum K_i, C, r, r]."""

    kind: str  # roi_pool (the paper) | roi_align (aligned=True)
    resolution: int
    spatial_scale: float
    sampling_ratio: int

    def __post_init__(self) -> None:
        if self.kind not in POOLERS:
            raise ValueError(f"pooler must be one of {', '.join(POOLERS)}, got {self.kind!r}")

    def __call__(self, features: Tensor, boxes: list[Tensor]) -> Tensor:
        # Boxes never in bfloat16/float16 (under autocast the features are): near 600 px bfloat16 steps by 4 px.
        reduced = features.dtype in (torch.bfloat16, torch.float16)
        boxes = [b.float() if reduced else b.to(features.dtype) for b in boxes]
        if self.kind == "roi_pool":
            # Bit-identical to torchvision's roi_pool; ~4x faster on CPU at inference (falls back to it for autograd).
            return roi_max_pool(features, boxes, self.resolution, self.spatial_scale)
        if features.requires_grad and features.device.type == "cpu":
            # Same numbers as torchvision's roi_align, whose CPU backward is a single-threaded loop (see detres.ops)
            return roi_align_matrix(features, boxes, self.resolution, self.spatial_scale, self.sampling_ratio)
        # torchvision's roi_align wants rois in the features' dtype: reduced-precision features pool in float32
        pooled = roi_align(features.float() if reduced else features, boxes, self.resolution, self.spatial_scale,
                           self.sampling_ratio, aligned=True)
        return pooled.to(features.dtype)

    def traceable(self) -> TraceableRoIPooling:
        return TraceableRoIPooling(self.kind, self.resolution, self.spatial_scale, self.sampling_ratio)


class TraceableRoIPooling(RoIPooling):
    """The same pooling through torchvision's ops on one [R, 5] (image index, box) tensor, for ONNX export."""

    def __call__(self, features: Tensor, boxes: list[Tensor]) -> Tensor:
        rois = torch.cat([torch.cat([b.new_full((b.shape[0], 1), float(i)), b.to(features.dtype)], dim=1)
                          for i, b in enumerate(boxes)])
        size = (self.resolution, self.resolution)
        if self.kind == "roi_pool":
            return roi_pool(features, rois, size, self.spatial_scale)
        return roi_align(features, rois, size, self.spatial_scale, self.sampling_ratio, aligned=True)
