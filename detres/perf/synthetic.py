"""Synthetic scenes for benchmarking: coloured rectangles and ellipses on a smooth background, with their boxes.

Natural-looking statistics (flat regions, edges) matter: BN statistics recomputed on them give activations of a
realistic size, and the boxes serve as training targets with the same RoI sampling on both detectors.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor


def synthetic_scene(height: int, width: int, rng: np.random.Generator, *, num_classes: int,
                    max_objects: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One RGB uint8 image [H, W, 3] with 1..max_objects shapes; boxes [N, 4] XYXY pixels, labels [N] in 1..C."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, size=3)
    tilt = rng.uniform(-0.1, 0.1, size=(2, 3))
    image = base + xs[..., None] * tilt[0] + ys[..., None] * tilt[1]
    image = np.clip(image, 0, 255).astype(np.uint8)
    count = int(rng.integers(1, max_objects + 1))
    boxes, labels = [], []
    for _ in range(count):
        w = int(rng.uniform(0.1, 0.5) * width)
        h = int(rng.uniform(0.1, 0.5) * height)
        x1 = int(rng.integers(0, width - w))
        y1 = int(rng.integers(0, height - h))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x1, y1), (x1 + w - 1, y1 + h - 1), colour, thickness=-1)
        else:
            cv2.ellipse(image, (x1 + w // 2, y1 + h // 2), (w // 2, h // 2), 0, 0, 360, colour, thickness=-1)
        boxes.append([x1, y1, x1 + w, y1 + h])
        labels.append(int(rng.integers(1, num_classes + 1)))
    noise = rng.normal(0, 4, size=image.shape)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return image, np.asarray(boxes, np.float32), np.asarray(labels, np.int64)


def synthetic_batch(count: int, *, height: int, width: int, num_classes: int, pixel_mean: list[float],
                    pixel_std: list[float], seed: int) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """`count` normalized images [3, H, W] float32 (RGB, (x/255 - mean)/std) and their targets (boxes, labels)."""
    rng = np.random.default_rng(seed)
    mean = torch.tensor(pixel_mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(pixel_std, dtype=torch.float32)[:, None, None]
    images, targets = [], []
    for _ in range(count):
        rgb, boxes, labels = synthetic_scene(height, width, rng, num_classes=num_classes)
        tensor = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
        images.append((tensor - mean) / std)
        targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)})
    return images, targets
