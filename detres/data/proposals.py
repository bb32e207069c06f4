"""Precomputed proposals joined to a training set (the Fast R-CNN steps of step-wise training).

The proposals of an image are stored once in its original pixels; each time the image is drawn they follow it
through the same data.augment draw, resize and flip as its ground-truth boxes (DetectionDataset carries them) and
reach the model as `target["proposals"]`.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor
from torch.utils.data import Dataset

from detres.errors import ConfigError, DataError


def proposals_to_image(boxes: Tensor, *, scale: tuple[float, float], flipped: bool, width: int) -> Tensor:
    """[K, 4] original-pixel boxes -> the resized (sy, sx) and, if flipped, mirrored image of width `width`.

    The same mapping albumentations applies to the ground truth (Resize, then HorizontalFlip: x -> width - x).
    """
    sy, sx = scale
    out = boxes * boxes.new_tensor([sx, sy, sx, sy])
    if flipped:
        out = torch.stack([width - out[:, 2], out[:, 1], width - out[:, 0], out[:, 3]], dim=1)
    return out


class ProposalDataset(Dataset):
    """A detection dataset whose targets also hold each image's proposals (input pixels of the returned image).

    proposals: image_id (as str) -> [K, 4] float32 boxes in the original image's pixels.
    Everything else (records, class map, epochs, aspect ratios) is the wrapped dataset's.
    """

    def __init__(self, *, dataset, proposals: dict[str, Tensor]) -> None:
        if getattr(dataset, "slots", None) is not None:  # stored proposals are per whole image, not per window
            raise ConfigError("data.train_crop does not work with solver.mode=stepwise (its proposals are stored "
                              "per whole image); set data.train_crop=0 or solver.mode=joint")
        missing = [r.image_id for r in dataset.records if str(r.image_id) not in proposals]
        if missing:
            raise DataError(f"no stored proposals for {len(missing)} training images (e.g. {missing[0]!r}); "
                            "the proposal file belongs to another training set: delete it and resume to recompute it")
        self.dataset = copy.copy(dataset)  # the caller's dataset stays without proposals
        self.dataset.proposals = proposals
        self.proposals = proposals

    def __getattr__(self, name: str):
        if name in ("dataset", "proposals"):  # not set yet (during unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]
