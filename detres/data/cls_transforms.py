"""Classification augmentation of Sec. 3.4 (ImageNet) and Sec. 4.2 (CIFAR), as albumentations pipelines."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch
from torch import Tensor

from detres.config import InputConfig

# Principal components of ImageNet's training-set RGB pixels on [0, 1]: eigenvalues and, as columns, the unit
# eigenvectors (the values of fb.resnet.torch, Facebook's reimplementation of the paper's ImageNet training).
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))


class PCAColourNoise(A.ImageOnlyTransform):
    """AlexNet's colour augmentation (Krizhevsky et al. 2012, Sec. 4.1), used by the paper (Sec. 3.4).

    Adds one RGB offset per image, `sum_i alpha_i * eigval_i * eigvec_i` with `alpha_i ~ N(0, alpha_std)`, to every
    pixel: the colour moves along the principal components of the training set's pixel colours. It runs on the
    normalized image, so the offset (on [0, 1] pixels) is divided by `pixel_std`, exactly as if added before
    normalization, with no rounding or clipping. Written here because albumentations' FancyPCA takes the
    components of each image instead of the dataset's and scales the pixels' deviations instead of adding one
    offset (at alpha 0.1 it changes a uint8 image by at most a level or two).
    """

    def __init__(self, *, alpha_std: float, eigval: tuple[float, ...], eigvec: tuple[tuple[float, ...], ...],
                 pixel_std: list[float], p: float = 1.0) -> None:
        super().__init__(p=p)
        self.alpha_std = alpha_std
        self.eigval = np.asarray(eigval, dtype=np.float64)  # [3]
        self.eigvec = np.asarray(eigvec, dtype=np.float64)  # [3 (RGB), 3 (components)]
        self.pixel_std = np.asarray(pixel_std, dtype=np.float64)

    def get_params(self) -> dict[str, np.ndarray]:
        alpha = self.random_generator.normal(0.0, self.alpha_std, len(self.eigval))
        return {"offset": (self.eigvec @ (alpha * self.eigval) / self.pixel_std).astype(np.float32)}

    def apply(self, img: np.ndarray, offset: np.ndarray, **params) -> np.ndarray:
        return (img + offset).astype(np.float32)


def _to_tensor(mean: list[float], std: list[float]) -> A.BasicTransform:
    # pixel_mean/std are on [0, 1] pixels (torchvision's convention); Normalize divides by max_pixel_value first
    return A.Normalize(mean=mean, std=std, max_pixel_value=255.0)


def imagenet_train_transform(cfg: InputConfig, mean: list[float], std: list[float]) -> A.Compose:
    """Shorter side random in resize_range, random crop_size crop, flip, mean/std, PCA colour noise."""
    low, high = cfg.resize_range
    steps = [
        A.SmallestMaxSize(max_size=list(range(low, high + 1)), interpolation=cv2.INTER_LINEAR),
        A.RandomCrop(cfg.crop_size, cfg.crop_size),
        A.HorizontalFlip(p=0.5),
        _to_tensor(mean, std),
    ]
    if cfg.pca_jitter > 0:
        steps.append(PCAColourNoise(alpha_std=cfg.pca_jitter, eigval=IMAGENET_PCA_EIGVAL, eigvec=IMAGENET_PCA_EIGVEC,
                                    pixel_std=std))
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
