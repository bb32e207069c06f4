"""XYXY box operations and the Faster R-CNN box coder.

Boxes are float32 [N, 4] (x1, y1, x2, y2) in absolute pixels, continuous coordinates (no "+1").
IoU, NMS and clipping come from torchvision.ops; this file holds only what it lacks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_iou, clip_boxes_to_image, remove_small_boxes  # noqa: F401  (re-export)

# Deltas for width/height are clamped so exp() cannot overflow: log(1000/16), as Detectron does.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode boxes as (dx, dy, dw, dh) deltas relative to reference boxes, and decode them back.

    weights: (wx, wy, ww, wh) that multiply the deltas (Fast R-CNN uses (10, 10, 5, 5), the RPN 1s).
    """

    def __init__(self, *, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 scale_clamp: float = DEFAULT_SCALE_CLAMP) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, reference: Tensor, target: Tensor) -> Tensor:
        """reference, target: [N, 4] XYXY -> deltas [N, 4] that map reference onto target."""
        wx, wy, ww, wh = self.weights
        rw, rh, rx, ry = _size_and_center(reference)
        tw, th, tx, ty = _size_and_center(target)
        return torch.stack(
            (wx * (tx - rx) / rw, wy * (ty - ry) / rh, ww * torch.log(tw / rw), wh * torch.log(th / rh)),
            dim=1,
        )

    def decode(self, deltas: Tensor, reference: Tensor) -> Tensor:
        """deltas: [N, 4*K] (K boxes per reference, e.g. one per class), reference: [N, 4] -> [N, 4*K]."""
        wx, wy, ww, wh = self.weights
        reference = reference.to(deltas.dtype)
        rw, rh, rx, ry = (t[:, None] for t in _size_and_center(reference))
        dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.scale_clamp)
        cx, cy = dx * rw + rx, dy * rh + ry
        w, h = torch.exp(dw) * rw, torch.exp(dh) * rh
        out = torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=2)
        return out.reshape(deltas.shape)


def _size_and_center(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return w, h, boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h


def box_area(boxes: Tensor) -> Tensor:
    """[N, 4] -> [N] areas (zero for degenerate boxes)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def scale_boxes(boxes: Tensor, scale_x: float, scale_y: float) -> Tensor:
    """Map boxes between a resized image and its original: multiply x by scale_x and y by scale_y."""
    factor = boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])
    return boxes * factor


def hflip_boxes(boxes: Tensor, image_width: float) -> Tensor:
    """Mirror XYXY boxes for a horizontally flipped image of the given width."""
    return torch.stack((image_width - boxes[:, 2], boxes[:, 1], image_width - boxes[:, 0], boxes[:, 3]), dim=1)
