"""`data.train_crop`: training on large images through random windows cut on the fly, with an epoch that covers them.

An image larger than SIZE (either side) yields SIZE x SIZE windows (the image's own side where it is smaller), at its
native resolution; the paper's resize and flip then apply to the window as to any image. The epoch's items are
window slots: an image of W x H pixels holds ceil(W/SIZE) x ceil(H/SIZE) slots, so it is drawn about area/SIZE^2
times per epoch (an image within SIZE once), and the grid of slots spans it. Each slot's window is its grid position
jittered by up to half the grid's overlap, drawn from the generator of (seed, epoch, item) like data.augment, so
`--resume` stays bit for bit. Boxes are clipped to the window and keep their label only if at least
data.augment_min_visibility of their area stays inside. A window with no object is kept with probability
data.train_crop_background; otherwise it moves onto a random object of the image (the whole object, or its centre
if it is larger than the window), so most items still teach objects while some teach background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detres.config import DataConfig
from detres.data.augment import augment_rng
from detres.errors import ConfigError

CROP_STREAM = 2  # the window's own random stream of (seed, epoch, item): data.augment (1) and scale/flip draw as before


@dataclass(frozen=True)
class TrainCrop:
    """The settings of data.train_crop (size > 0)."""

    size: int
    background_prob: float
    min_visibility: float
    cache_mb: int

    @classmethod
    def from_config(cls, data: DataConfig) -> TrainCrop | None:
        """None when data.train_crop is 0; ConfigError naming the key for a value out of range."""
        if data.train_crop == 0:
            return None
        if data.train_crop < 32:
            raise ConfigError(f"data.train_crop={data.train_crop} must be 0 (off) or a window side of at least 32 "
                              "pixels, e.g. data.train_crop=512")
        if not 0.0 <= data.train_crop_background <= 1.0:
            raise ConfigError(f"data.train_crop_background={data.train_crop_background} must be a probability "
                              "in [0, 1] (default 0.2)")
        if not 0.0 <= data.augment_min_visibility <= 1.0:
            raise ConfigError(f"data.augment_min_visibility={data.augment_min_visibility} must be in [0, 1]")
        if data.train_crop_cache_mb < 0:
            raise ConfigError(f"data.train_crop_cache_mb={data.train_crop_cache_mb} must be >= 0 (0: no cache)")
        return cls(size=data.train_crop, background_prob=data.train_crop_background,
                   min_visibility=data.augment_min_visibility, cache_mb=data.train_crop_cache_mb)


@dataclass(frozen=True)
class Slot:
    """One item of an epoch: window (col, row) of the grid of image `image` (a record index)."""

    image: int
    col: int
    row: int
    cols: int
    rows: int


def grid(width: int, height: int, size: int) -> tuple[int, int]:
    """(columns, rows) of windows of an image: ceil(side / size) each way, so the grid spans the image."""
    return max(1, math.ceil(width / size)), max(1, math.ceil(height / size))


def crop_plan(sizes: list[tuple[int, int]], size: int) -> list[Slot]:
    """The items of every epoch for images of (width, height): each image's grid of window slots, in image order
    (the batch sampler shuffles them). An image's share of the epoch grows with its area: about area / size^2."""
    slots = []
    for index, (width, height) in enumerate(sizes):
        cols, rows = grid(width, height, size)
        slots += [Slot(index, c, r, cols, rows) for r in range(rows) for c in range(cols)]
    return slots


def _grid_origin(position: int, count: int, side: int, window: int, rng: np.random.Generator) -> int:
    """The window's left (or top) edge: grid position `position` of `count` evenly spread windows, jittered by up to
    half the overlap of neighbouring windows (neighbours still meet), clipped to the image."""
    room = side - window
    if count == 1:  # the image is no larger than the window this way: the window is the image
        return 0
    step = room / (count - 1)
    half_overlap = (window - step) / 2
    origin = position * step + rng.uniform(-half_overlap, half_overlap)
    return int(round(min(max(origin, 0.0), room)))


def crop_boxes(boxes: np.ndarray, labels: np.ndarray, ignore: np.ndarray, window: tuple[int, int, int, int],
               min_visibility: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes [N, 4] XYXY of the image -> those of the window (x0, y0, w, h), in the window's pixels: clipped to it,
    kept (with their labels and ignore flags) if at least `min_visibility` of their area and a positive area stay."""
    x0, y0, w, h = window
    boxes = boxes.astype(np.float32).reshape(-1, 4)
    shifted = boxes - np.array([x0, y0, x0, y0], np.float32)
    clipped = shifted.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, w)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, h)
    area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (inside > 0) & (inside >= min_visibility * area)
    return clipped[keep], labels[keep], ignore[keep]


def _onto_object(box: np.ndarray, side: int, window: int, rng: np.random.Generator, axis: int) -> int:
    """An edge for a window that holds the object whole (its centre when it is larger than the window)."""
    lo_edge, hi_edge = float(box[axis]), float(box[axis + 2])
    if hi_edge - lo_edge <= window:
        lo, hi = hi_edge - window, lo_edge
    else:
        centre = (lo_edge + hi_edge) / 2
        lo, hi = centre - window, centre
    lo, hi = math.ceil(max(lo, 0.0)), math.floor(min(hi, side - window))
    return int(rng.integers(lo, hi + 1)) if lo <= hi else min(max(lo, 0), side - window)


def draw_window(slot: Slot, width: int, height: int, boxes: np.ndarray, ignore: np.ndarray, crop: TrainCrop,
                seed: int, epoch: int, item: int) -> tuple[int, int, int, int]:
    """The window (x0, y0, w, h) of item `item` in `epoch`, a pure function of its arguments (see the module doc)."""
    rng = augment_rng(seed, epoch, item, stream=CROP_STREAM)
    w, h = min(crop.size, width), min(crop.size, height)
    x0 = _grid_origin(slot.col, slot.cols, width, w, rng)
    y0 = _grid_origin(slot.row, slot.rows, height, h, rng)
    window = (x0, y0, w, h)
    trainable = boxes[~ignore]
    keep_background = rng.random() < crop.background_prob
    if keep_background or len(trainable) == 0:
        return window
    _, _, flags = crop_boxes(boxes, np.zeros(len(boxes), np.int64), ignore, window, crop.min_visibility)
    if (~flags).any():
        return window
    target = trainable[int(rng.integers(len(trainable)))]
    return _onto_object(target, width, w, rng, 0), _onto_object(target, height, h, rng, 1), w, h


# a random window of side S holds an object of side L whole with probability (1 - L/S)^2 (its origin is uniform over
# the positions, per axis); at S = L / (1 - sqrt(0.5)), about 3.4 L, that is one half
WHOLE_PROBABILITY = 0.5


def whole_probability(side: float, size: int) -> float:
    """Probability that a random size x size window holds a square object of `side` pixels whole."""
    return max(0.0, 1.0 - side / size) ** 2


def recommend_train_crop(records: list, *, train_scale: int) -> dict:
    """data.train_crop for these records: the smallest multiple of 32 at which an object of the 99th-percentile
    longer side (native pixels) lies whole in a random window half the time, and at least `train_scale` (the
    shorter side the window is resized to: a smaller window would only be enlarged to it, more compute for the
    same pixels). 0 when no image is larger than that, crops would change nothing. Json-ready dict."""
    sides = np.concatenate([np.maximum(r.boxes[~r.ignore, 2] - r.boxes[~r.ignore, 0],
                                       r.boxes[~r.ignore, 3] - r.boxes[~r.ignore, 1]) for r in records])
    if sides.size == 0:
        return {"train_crop": 0, "reason": "no trainable boxes"}
    p99 = float(np.percentile(sides, 99))
    size = max(math.ceil(p99 / (1.0 - math.sqrt(1.0 - WHOLE_PROBABILITY)) / 32) * 32, math.ceil(train_scale / 32) * 32)
    larger = sum(1 for r in records if max(r.width, r.height) > size)
    windows = len(crop_plan([(r.width, r.height) for r in records], size))
    advice = {"train_crop": size if larger else 0, "p99_longer_side_px": round(p99, 1),
              "p99_whole_probability": round(whole_probability(p99, size), 3), "train_scale": train_scale,
              "zoom": round(train_scale / size, 3), "images_larger_than_crop": larger,
              "windows_per_epoch": windows, "images": len(records)}
    if not larger:
        advice["reason"] = f"no image is larger than {size} px: train on whole images (data.train_crop=0)"
    return advice
