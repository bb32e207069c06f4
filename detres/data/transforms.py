"""Detection transforms: resize (shorter side to the scale, longer side capped), flip, normalize.

Albumentations moves the boxes with the pixels (BboxParams); the resize factor is computed here because the
paper's rule (short side = s unless the long side would exceed max_size) is one min() that no single
albumentations transform expresses.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch
from torch import Tensor


def resize_factor(height: int, width: int, short: int, max_size: int) -> float:
    """Factor that brings the shorter side to `short` unless the longer side would exceed `max_size`."""
    return min(short / min(height, width), max_size / max(height, width))


def normalize_to_tensor(rgb: np.ndarray, mean: list[float], std: list[float]) -> Tensor:
    """uint8 RGB [H, W, 3] -> float32 [3, H, W], (x/255 - mean) / std per channel."""
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)
    return image.sub_(torch.tensor(mean).view(3, 1, 1)).div_(torch.tensor(std).view(3, 1, 1))


def resize_and_flip(rgb: np.ndarray, boxes: np.ndarray, labels: np.ndarray, ignore: np.ndarray, *,
                    short: int, max_size: int, flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                     np.ndarray, tuple[float, float]]:
    """Resize (and mirror) an image with its boxes; returns image, boxes, labels, ignore, (sy, sx) factors."""
    height, width = rgb.shape[:2]
    factor = resize_factor(height, width, short, max_size)
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    steps = [A.Resize(new_h, new_w, interpolation=cv2.INTER_LINEAR)]
    if flip:
        steps.append(A.HorizontalFlip(p=1.0))
    pipeline = A.Compose(steps, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "ignore"],
                                                         clip=True, min_area=0.0, min_visibility=0.0))
    out = pipeline(image=rgb, bboxes=boxes.reshape(-1, 4), labels=labels, ignore=ignore)
    out_boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
    return (out["image"], out_boxes, np.asarray(out["labels"], np.int64), np.asarray(out["ignore"], bool),
            (new_h / height, new_w / width))


def prepare_image(rgb: np.ndarray, *, short: int, max_size: int, pixel_mean: list[float],
                  pixel_std: list[float]) -> tuple[Tensor, float]:
    """A raw RGB image -> (model input [3, H', W'], resize factor) for inference tools."""
    height, width = rgb.shape[:2]
    factor = resize_factor(height, width, short, max_size)
    resized = cv2.resize(rgb, (max(1, round(width * factor)), max(1, round(height * factor))),
                         interpolation=cv2.INTER_LINEAR)
    return normalize_to_tensor(resized, pixel_mean, pixel_std), factor


def to_original(det: dict[str, torch.Tensor], meta: dict) -> dict[str, np.ndarray]:
    """Boxes in the resized input's pixels -> the original image's pixels (meta["scale"] = resized/original)."""
    sy, sx = meta["scale"]
    boxes = det["boxes"].float().cpu().numpy() / np.array([sx, sy, sx, sy], np.float32)
    height, width = meta["orig_size"]
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return {"boxes": boxes, "scores": det["scores"].float().cpu().numpy(),
            "labels": det["labels"].cpu().numpy().astype(np.int64)}
