"""Classification augmentation of Sec. 3.4 (ImageNet) and Sec. 4.2 (CIFAR), as albumentations pipelines."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch
from torch import Tensor

from detres.config import InputConfig


def _to_tensor(mean: list[float], std: list[float]) -> A.BasicTransform:
    # pixel_mean/std are on [0, 1] pixels (torchvision's convention); Normalize divides by max_pixel_value first
    return A.Normalize(mean=mean, std=std, max_pixel_value=255.0)


def imagenet_train_transform(cfg: InputConfig, mean: list[float], std: list[float]) -> A.Compose:
    """Shorter side random in resize_range, random crop_size crop, flip, PCA colour noise, mean/std."""
    low, high = cfg.resize_range
    steps = [
        A.SmallestMaxSize(max_size=list(range(low, high + 1)), interpolation=cv2.INTER_LINEAR),
        A.RandomCrop(cfg.crop_size, cfg.crop_size),
        A.HorizontalFlip(p=0.5),
    ]
    if cfg.pca_jitter > 0:  # AlexNet-style PCA colour augmentation (Krizhevsky et al. 2012), on uint8 RGB
        steps.append(A.FancyPCA(alpha=cfg.pca_jitter, p=1.0))
    steps.append(_to_tensor(mean, std))
    return A.Compose(steps)


def imagenet_test_transform(cfg: InputConfig, mean: list[float], std: list[float]) -> A.Compose:
    """Shorter side to test_resize, centre crop_size crop, mean/std (single-crop testing)."""
    return A.Compose([A.SmallestMaxSize(max_size=cfg.test_resize), A.CenterCrop(cfg.crop_size, cfg.crop_size),
                      _to_tensor(mean, std)])


def cifar_train_transform(cfg: InputConfig, mean: list[float], std: list[float]) -> A.Compose:
    """Sec. 4.2: 4 pixels of zero padding on each side, a random 32x32 crop, horizontal flip."""
    size = 32 + 2 * cfg.cifar_pad
    return A.Compose([A.PadIfNeeded(size, size, border_mode=cv2.BORDER_CONSTANT, fill=0),
                      A.RandomCrop(32, 32), A.HorizontalFlip(p=0.5), _to_tensor(mean, std)])


def cifar_test_transform(cfg: InputConfig, mean: list[float], std: list[float]) -> A.Compose:
    return A.Compose([_to_tensor(mean, std)])


def normalize_only(mean: list[float], std: list[float]) -> A.Compose:
    """Mean/std only: for testing modes that crop or rescale themselves (10-crop, fully convolutional)."""
    return A.Compose([_to_tensor(mean, std)])


def to_chw_tensor(image: np.ndarray) -> Tensor:
    """[H, W, 3] float32 -> [3, H, W] contiguous tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
