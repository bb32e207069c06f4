"""Testing the per-class RPN on one image: center-crop ("1-crop") or dense (fully convolutional, multi-scale).

Both return, per requested class, its highest-scoring boxes after NMS in ORIGINAL-image pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import nms

from detres.localization.data import center_crop_window, normalize, resize_shorter
from detres.localization.per_class_rpn import LocRPNPredictor


def _pre_nms(boxes: Tensor, scores: Tensor, pre_nms_topk: int) -> tuple[Tensor, Tensor]:
    """Drop zero-area boxes (clipping makes them), keep the pre_nms_topk best (0: all)."""
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores = boxes[keep], scores[keep]
    if 0 < pre_nms_topk < len(scores):
        scores, order = scores.topk(pre_nms_topk)
        boxes = boxes[order]
    return boxes, scores


def _select(boxes: Tensor, scores: Tensor, *, pre_nms_topk: int, nms_thresh: float, topk: int) -> tuple[Tensor, Tensor]:
    """Highest-scoring pre_nms_topk, NMS, then the best topk: boxes [K, 4], scores [K], best first."""
    boxes, scores = _pre_nms(boxes, scores, pre_nms_topk)
    keep = nms(boxes, scores, nms_thresh)[:topk]  # nms returns indices sorted by decreasing score
    return boxes[keep], scores[keep]


def rpn_dense(predictor: LocRPNPredictor, rgb: np.ndarray, labels: list[int], *, scales: list[int], max_size: int,
              pixel_mean: list[float], pixel_std: list[float], pre_nms_topk: int, nms_thresh: float,
              topk: int) -> dict[int, tuple[Tensor, Tensor]]:
    """Dense testing: the whole image, shorter side at each of `scales`, fully convolutionally; boxes of all
    scales mapped back to the original image and pooled before NMS.

    rgb: [H, W, 3] uint8 -> {label: (boxes [K, 4] XYXY original pixels, scores [K])}, K <= topk, best first.
    """
    device = next(predictor.model.parameters()).device
    pooled: dict[int, list[tuple[Tensor, Tensor]]] = {label: [] for label in labels}
    for short in scales:
        resized, scale = resize_shorter(rgb, short, max_size)
        image = normalize(resized, pixel_mean, pixel_std).to(device)
        for label, (boxes, scores) in predictor.boxes_for_classes(image, labels).items():
            boxes, scores = _pre_nms(boxes, scores, pre_nms_topk)
            pooled[label].append((boxes / scale, scores))
    out = {}
    for label, parts in pooled.items():
        boxes = torch.cat([p[0] for p in parts])
        scores = torch.cat([p[1] for p in parts])
        out[label] = _select(boxes, scores, pre_nms_topk=0, nms_thresh=nms_thresh, topk=topk)
    return out


def rpn_center_crop(predictor: LocRPNPredictor, rgb: np.ndarray, labels: list[int], *, resize: int, crop: int,
                    pixel_mean: list[float], pixel_std: list[float], pre_nms_topk: int, nms_thresh: float,
                    topk: int) -> dict[int, tuple[Tensor, Tensor]]:
    """1-crop testing: shorter side to `resize`, the central crop x crop window only (as classification testing).

    Same output as `rpn_dense`; boxes cannot leave the crop.
    """
    device = next(predictor.model.parameters()).device
    resized, scale = resize_shorter(rgb, max(resize, crop))
    h, w = resized.shape[:2]
    x0, y0 = center_crop_window(h, w, crop)
    image = normalize(resized[y0:y0 + crop, x0:x0 + crop], pixel_mean, pixel_std).to(device)
    shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32, device=device)
    out = {}
    for label, (boxes, scores) in predictor.boxes_for_classes(image, labels).items():
        boxes, scores = _select(boxes, scores, pre_nms_topk=pre_nms_topk, nms_thresh=nms_thresh, topk=topk)
        out[label] = ((boxes + shift) / scale, scores)
    return out
