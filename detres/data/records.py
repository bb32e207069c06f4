"""The dataset-independent form of a detection annotation, and the map from model labels to dataset classes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DetRecord:
    """One image's annotation. boxes: [N, 4] float32 XYXY absolute pixels; labels: [N] int64 in 1..C;
    ignore: [N] bool (COCO crowd / VOC difficult: neither positive nor negative in training, ignored in eval)."""

    image_path: str
    image_id: int
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DetRecord):
            return NotImplemented
        return (self.image_path == other.image_path and self.image_id == other.image_id
                and (self.width, self.height) == (other.width, other.height)
                and np.array_equal(self.boxes, other.boxes) and np.array_equal(self.labels, other.labels)
                and np.array_equal(self.ignore, other.ignore))

    @property
    def num_trainable(self) -> int:
        return int((~self.ignore).sum())


@dataclass
class ClassMap:
    """Contiguous label i+1 is class names[i], known to its dataset as dataset_ids[i] (COCO category id,
    or the name itself for VOC-style sets). It travels in every checkpoint."""

    names: list[str]
    dataset_ids: list

    def __len__(self) -> int:
        return len(self.names)

    def name_of(self, label: int) -> str:
        return self.names[label - 1]

    def to_dict(self) -> dict:
        return {"names": list(self.names), "dataset_ids": list(self.dataset_ids)}

    @classmethod
    def from_dict(cls, data: dict) -> ClassMap:
        return cls(names=list(data["names"]), dataset_ids=list(data["dataset_ids"]))


def clip_and_filter(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip XYXY boxes to the image; return (clipped boxes, keep mask of boxes with positive area)."""
    boxes = boxes.astype(np.float32).reshape(-1, 4).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes, keep
