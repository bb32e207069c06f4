"""Classification testing (Sec. 3.4): centre crop, 10-crop, fully-convolutional multi-scale; top-1/top-5 error."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from detres.config import InputConfig
from detres.data import cls_transforms as T
from detres.modeling.resnet import ResNet

CLS_MODES = ("center", "tencrop", "fullyconv")


def topk_errors(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """scores [N, C], labels [N] -> {"cls/top1_err": %, "cls/top5_err": %} (k capped at C)."""
    out = {}
    for k in ks:
        top = scores.topk(min(k, scores.shape[1]), dim=1).indices
        correct = (top == labels[:, None]).any(dim=1).float().mean().item()
        out[f"cls/top{k}_err"] = 100.0 * (1.0 - correct)
    return out


def ten_crops(image: Tensor, size: int) -> Tensor:
    """[3, H, W] -> [10, 3, size, size]: four corners and the centre, then the same five of the flipped image."""
    _, h, w = image.shape
    tops = [0, 0, h - size, h - size, (h - size) // 2]
    lefts = [0, w - size, 0, w - size, (w - size) // 2]
    crops = torch.stack([image[:, t:t + size, l:l + size] for t, l in zip(tops, lefts)])
    return torch.cat([crops, crops.flip(-1)])


def fully_conv_logits(model: ResNet, image: Tensor) -> Tensor:
    """[3, H, W] -> [C]: the fc layer applied as a 1x1 conv at every position of the last map, then averaged.

    Averaging logits over positions equals global average pooling before fc (fc is linear), so at a single
    scale on a crop-sized image this is exactly centre-crop testing.
    """
    features = model.forward_features(image[None])  # [1, D, h, w]
    weight = model.fc.weight[:, :, None, None]
    return F.conv2d(features, weight, model.fc.bias).mean(dim=(2, 3))[0]


def resize_shorter(image: np.ndarray, short: int) -> np.ndarray:
    """[H, W, 3] float -> shorter side `short`, aspect ratio kept (OpenCV bilinear)."""
    h, w = image.shape[:2]
    scale = short / min(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_LINEAR)


def transform_for_mode(mode: str, cfg: InputConfig, mean: list[float], std: list[float]) -> A.Compose:
    """The dataset transform each test mode expects (the mode's own cropping happens in `image_scores`)."""
    if mode == "center":
        return T.imagenet_test_transform(cfg, mean, std)
    if mode == "tencrop":
        return A.Compose([A.SmallestMaxSize(max_size=cfg.test_resize), A.Normalize(mean=mean, std=std)])
    if mode == "fullyconv":
        return T.normalize_only(mean, std)
    raise ValueError(f"classification test mode must be one of {CLS_MODES}, got {mode!r}")


@torch.no_grad()
def image_scores(model: ResNet, image: np.ndarray, *, mode: str, crop_size: int,
                 scales: list[int]) -> Tensor:
    """One transformed image [H, W, 3] float -> class probabilities [C] under the test mode."""
    device = model.fc.weight.device
    if mode == "center":
        return F.softmax(model(T.to_chw_tensor(image)[None].to(device)), dim=1)[0]
    if mode == "tencrop":
        return F.softmax(model(ten_crops(T.to_chw_tensor(image).to(device), crop_size)), dim=1).mean(dim=0)
    probs = [F.softmax(fully_conv_logits(model, T.to_chw_tensor(resize_shorter(image, s)).to(device)), dim=0)
             for s in scales]
    return torch.stack(probs).mean(dim=0)  # scores averaged over the scales


@torch.no_grad()
def evaluate_classifier(model: ResNet, dataset, *, mode: str, crop_size: int, scales: list[int],
                        progress=None) -> dict[str, float]:
    """Top-1/top-5 error of `model` over `dataset` (whose transform came from `transform_for_mode(mode)`)."""
    model.eval()
    scores, labels = [], []
    indices = range(len(dataset)) if progress is None else progress(range(len(dataset)))
    for i in indices:
        image = dataset.transform(image=dataset.load_rgb(i))["image"]
        scores.append(image_scores(model, image, mode=mode, crop_size=crop_size, scales=scales).cpu())
        labels.append(dataset.label_of(i))
    return topk_errors(torch.stack(scores), torch.tensor(labels))
