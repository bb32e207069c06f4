"""Batching images of different sizes: zero padding at the bottom/right to a common, stride-divisible size."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def pad_images(images: list[Tensor], size_divisibility: int) -> tuple[Tensor, list[tuple[int, int]]]:
    """B x [3, H_i, W_i] -> ([B, 3, H, W] zero-padded, [(H_i, W_i)]); H and W are multiples of the divisibility."""
    if not images:
        raise ValueError("pad_images needs at least one image")
    sizes = [(img.shape[-2], img.shape[-1]) for img in images]
    div = max(size_divisibility, 1)
    if len(images) == 1:  # F.pad with the sizes as they come: also what the exported graph traces (symbolic sizes)
        height, width = sizes[0]
        return F.pad(images[0][None], (0, (div - width % div) % div, 0, (div - height % div) % div)), sizes
    height = math.ceil(max(h for h, _ in sizes) / div) * div
    width = math.ceil(max(w for _, w in sizes) / div) * div
    batch = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    for slot, img in zip(batch, images):
        slot[:, : img.shape[-2], : img.shape[-1]].copy_(img)
    return batch, sizes



