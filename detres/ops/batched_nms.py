"""Per-class NMS that traces: torchvision's batched_nms branches on the (data-dependent) box count, which a
torch.export / ONNX graph cannot hold; this is its coordinate-offset form with no branch, safe on zero boxes."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms


def batched_nms_traceable(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """torchvision.ops.batched_nms(boxes [N, 4], scores [N], idxs [N], iou_threshold) -> kept indices [K],

    by decreasing score. Each class's boxes are shifted by class * (largest coordinate + 1), so boxes of different
    classes never overlap and one NMS call does every class. With N = 0 it returns an empty index tensor.
    """
    # the 0 joins the coordinates so that the max of zero boxes is defined (0), not an error
    largest = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes.dtype) * (largest + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)
