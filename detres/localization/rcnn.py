"""The R-CNN stage of App. C: class-dependent proposals from the per-class RPN are cropped, warped to
rcnn_input_size x rcnn_input_size and rescored / refined by a classification ResNet whose head is two sibling
fc layers: `cls` (C + 1 softmax: background + C classes, because most of the 200 proposals are not the object)
and `reg` (C x 4 deltas, one regressor per class).

The warp is torchvision.ops.roi_align(aligned=True) on the image tensor: output pixel (i, j) of an S x S crop
samples the continuous point (x1 + (j + 0.5) * w / S, y1 + (i + 0.5) * h / S), so the box's edges land exactly on
the crop's edges (adaptive sampling averages ceil(h / S) x ceil(w / S) points per output pixel, which
anti-aliases downscaling).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler
from torchvision.ops import box_iou, roi_align

from detres.boxes import BoxCoder
from detres.data.image_io import read_image_rgb
from detres.localization.data import LocRecord, normalize


def warp_boxes(image: Tensor, boxes: Tensor, size: int) -> Tensor:
    """image: [3, H, W], boxes: [K, 4] XYXY pixels of that image -> crops [K, 3, size, size] (bilinear warp)."""
    if len(boxes) == 0:
        return image.new_zeros(0, image.shape[0], size, size)
    return roi_align(image[None], [boxes.to(image.dtype)], output_size=(size, size), spatial_scale=1.0,
                     sampling_ratio=0, aligned=True)


class LocRCNN(nn.Module):
    """body: crops [B, 3, S, S] -> features [B, F, h, w] (a ResNet conv1..conv5_x); global average pool, then
    `cls` fc -> logits [B, C + 1] (0 = background) and `reg` fc -> deltas [B, C, 4]."""

    def __init__(self, *, body: nn.Module, feat_channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = body
        self.num_classes = num_classes
        self.cls = nn.Linear(feat_channels, num_classes + 1)
        self.reg = nn.Linear(feat_channels, num_classes * 4)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.reg.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.reg.bias)

    def forward(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        x = self.body(crops).mean(dim=(2, 3))
        return self.cls(x), self.reg(x).view(-1, self.num_classes, 4)


def rcnn_loss(logits: Tensor, deltas: Tensor, labels: Tensor, reg_targets: Tensor, *,
              smooth_l1_beta: float) -> dict[str, Tensor]:
    """logits [B, C+1], deltas [B, C, 4], labels [B] (0 background, 1..C), reg_targets [B, 4] (used where
    label > 0) -> softmax cross-entropy and smooth L1 on the labelled class's deltas, both / B (Fast R-CNN)."""
    loss_cls = F.cross_entropy(logits, labels)
    fg = torch.nonzero(labels > 0).squeeze(1)
    box = deltas[fg, labels[fg] - 1]
    loss_box = F.smooth_l1_loss(box, reg_targets[fg], beta=smooth_l1_beta, reduction="sum") / max(len(labels), 1)
    return {"loss_cls": loss_cls, "loss_box": loss_box}


def label_proposals(proposals: Tensor, gt_boxes: Tensor, label: int, *, fg_iou: float, bg_iou_lo: float,
                    coder: BoxCoder) -> tuple[Tensor, Tensor, Tensor]:
    """proposals [K, 4], gt_boxes [G, 4] of the image's class `label` -> (keep [K'] indices, labels [K'],
    reg_targets [K', 4]).

    Rule: IoU >= fg_iou with a gt box -> `label` (regress to that box); bg_iou_lo <= IoU < fg_iou ->
    background 0; below bg_iou_lo -> not used (too easy).
    """
    iou = box_iou(gt_boxes, proposals) if len(gt_boxes) else proposals.new_zeros(1, len(proposals))
    best, idx = iou.max(dim=0)
    keep = torch.nonzero(best >= bg_iou_lo).squeeze(1)
    labels = torch.where(best[keep] >= fg_iou, label, 0).to(torch.int64)
    targets = torch.zeros(len(keep), 4)
    fg = labels > 0
    if fg.any():
        targets[fg] = coder.encode(proposals[keep][fg], gt_boxes[idx[keep][fg]])
    return keep, labels, targets


class RoICropDataset(Dataset):
    """RoI-centric training set: every labelled (image, proposal) pair is one item, so a mini-batch draws
    crops from many images. Item: (crop [3, S, S] normalized, label int, reg target [4]) with a random
    horizontal flip (which mirrors dx).

    entries: (record index, box [4] original pixels, label, reg target [4]) per RoI.
    """

    def __init__(self, records: list[LocRecord], entries: list[tuple[int, np.ndarray, int, np.ndarray]], *,
                 size: int, flip: bool, pixel_mean: list[float], pixel_std: list[float],
                 max_pixels: int = 100_000_000, cache_images: bool = False) -> None:
        self.records, self.entries, self.size, self.flip = records, entries, size, flip
        self.pixel_mean, self.pixel_std, self.max_pixels = pixel_mean, pixel_std, max_pixels
        self._cache: dict[int, Tensor] | None = {} if cache_images else None

    def __len__(self) -> int:
        return len(self.entries)

    def labels(self) -> np.ndarray:
        return np.array([e[2] for e in self.entries], np.int64)

    def _image(self, i: int) -> Tensor:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        image = normalize(read_image_rgb(self.records[i].image_path, max_pixels=self.max_pixels),
                          self.pixel_mean, self.pixel_std)
        if self._cache is not None:  # small sets: decode each image once, not once per RoI
            self._cache[i] = image
        return image

    def __getitem__(self, k: int) -> tuple[Tensor, int, Tensor]:
        rec_index, box, label, target = self.entries[k]
        crop = warp_boxes(self._image(rec_index), torch.as_tensor(box, dtype=torch.float32)[None], self.size)[0]
        target = torch.as_tensor(target, dtype=torch.float32).clone()
        if self.flip and torch.rand(()) < 0.5:
            crop = crop.flip(-1)
            target[0] = -target[0]  # mirrored crop: the centre offset changes sign, sizes do not
        return crop, label, target


class BalancedRoIBatchSampler(Sampler[list[int]]):
    """Mini-batches of `batch_size` RoIs drawn uniformly across all images: round(batch * fg_fraction)
    foreground (fewer if the set has fewer), the rest background; `num_batches` per epoch."""

    def __init__(self, labels: np.ndarray, *, batch_size: int, fg_fraction: float, num_batches: int,
                 seed: int) -> None:
        self.fg = np.flatnonzero(labels > 0)
        self.bg = np.flatnonzero(labels == 0)
        self.batch_size, self.fg_fraction, self.num_batches, self.seed = batch_size, fg_fraction, num_batches, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        for _ in range(self.num_batches):
            n_fg = min(round(self.batch_size * self.fg_fraction), len(self.fg))
            n_bg = min(self.batch_size - n_fg, len(self.bg))
            n_fg = min(self.batch_size - n_bg, len(self.fg))
            batch = np.concatenate([rng.choice(self.fg, n_fg, replace=False), rng.choice(self.bg, n_bg, replace=False)])
            yield batch.tolist()


@torch.no_grad()
def rcnn_rescore(model: LocRCNN, image: Tensor, proposals: Tensor, label: int, *, size: int, coder: BoxCoder,
                 chunk: int = 256) -> tuple[Tensor, Tensor]:
    """Test time, one predicted class: image [3, H, W] normalized original image, proposals [K, 4] of class
    `label` -> (refined boxes [K, 4] clipped to the image, scores [K] = softmax probability of `label`)."""
    h, w = image.shape[-2:]
    boxes, scores = [], []
    for start in range(0, len(proposals), chunk):
        props = proposals[start:start + chunk]
        logits, deltas = model(warp_boxes(image, props, size))
        scores.append(logits.softmax(dim=1)[:, label])
        refined = coder.decode(deltas[:, label - 1], props)
        refined[:, 0::2] = refined[:, 0::2].clamp(0, w)
        refined[:, 1::2] = refined[:, 1::2].clamp(0, h)
        boxes.append(refined)
    if not boxes:
        return proposals.new_zeros(0, 4), proposals.new_zeros(0)
    return torch.cat(boxes), torch.cat(scores)
