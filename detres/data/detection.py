"""Detection datasets: records from any reader, images read, resized, flipped and normalized for the model."""

from __future__ import annotations

import logging
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from detres.config import DataConfig, DatasetConfig, InputConfig
from detres.data.augment import augment_rng, augment_with_proposals, build_augment
from detres.data.crops import TrainCrop, crop_boxes, crop_plan, draw_window
from detres.data.demo_data import ensure_split_data
from detres.data.formats import detection_format, split_path
from detres.data.image_io import read_image_rgb
from detres.data.proposals import proposals_to_image
from detres.data.records import ClassMap, DetRecord
from detres.data.transforms import normalize_to_tensor, resize_and_flip
from detres.data.window_read import WindowReader
from detres.errors import DataError

log = logging.getLogger("detres.data")


class DetectionDataset(Dataset):
    """Item i -> (image [3, H, W] normalized, target dict(boxes, labels, ignore) in its pixels, meta dict).

    meta: image_id, orig_size (h, w), scale (sy, sx) = resized / original, flipped, file. In training the
    scale is drawn from `train_scales` and the flip from a generator seeded by (seed, epoch, index), so the
    augmented stream is reproducible; an unreadable image is logged and replaced by the next one. `augment`
    (data.augment) runs first in training, drawn from its own generator of (seed, epoch, index).

    With `crop` (data.train_crop, training only) the items are window slots rather than images (detres.data.crops:
    a large image yields about area / crop^2 items per epoch); the item's window is cut before data.augment, read
    through a WindowReader, and `index` in the draws above is the item's.
    """

    def __init__(self, *, records: list[DetRecord], class_map: ClassMap, input_cfg: InputConfig,
                 pixel_mean: list[float], pixel_std: list[float], train: bool, seed: int = 0,
                 augment: A.Compose | None = None, crop: TrainCrop | None = None) -> None:
        self.records = records
        self.class_map = class_map
        self.input_cfg = input_cfg
        self.pixel_mean, self.pixel_std = pixel_mean, pixel_std
        self.train = train
        self.seed = seed
        self.augment = augment
        # image_id (str) -> [K, 4] original-pixel proposals (step-wise training, detres.data.proposals): when set,
        # each item's target also holds its proposals, moved by the same augmentation, resize and flip as its boxes
        self.proposals: dict[str, Tensor] | None = None
        self.epoch = 0
        self.train_scales = list(input_cfg.train_scales)  # shorter sides a training image is drawn at
        self.max_size_ratio = 0.0  # > 0: longer side capped at scale * ratio instead of input_cfg.max_size
        self.batch_scales: list[int] | None = None  # set: one scale per mini-batch, chosen by the batch sampler
        self.crop = crop if train else None
        self.slots = crop_plan([(r.width, r.height) for r in records], crop.size) if self.crop else None
        self.reader = WindowReader(cache_mb=crop.cache_mb, max_pixels=input_cfg.max_pixels) if self.crop else None

    def set_train_scales(self, scales: list[int], max_size_ratio: float = 0.0, per_batch: bool = False) -> None:
        """Multi-scale training (detres.data.train_scales): the scales, their longer-side cap, per image or batch."""
        self.train_scales, self.max_size_ratio = list(scales), max_size_ratio
        self.batch_scales = list(scales) if per_batch else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.slots) if self.slots is not None else len(self.records)

    def aspect_ratios(self) -> np.ndarray:
        """Width / height of each item: an image, or a window (crop x crop, or the image's side where smaller)."""
        if self.slots is not None:
            size = self.crop.size
            return np.array([min(size, self.records[s.image].width) / min(size, self.records[s.image].height)
                             for s in self.slots])
        return np.array([r.width / r.height for r in self.records])

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[Tensor, dict[str, Tensor], dict]:
        """index, or (index, shorter side) from a batch sampler that draws one scale per mini-batch."""
        index, short = index if isinstance(index, tuple) else (index, None)
        if not self.train:
            return self._load(index, np.random.default_rng(0))
        for attempt in range(min(len(self), 10)):
            i = (index + attempt) % len(self)
            try:
                return self._load(i, np.random.default_rng([self.seed, self.epoch, i]), short)
            except DataError as exc:
                log.warning("skipping unreadable training image: %s", exc)
        raise DataError(f"10 consecutive training images around index {index} are unreadable; check the dataset")

    def _load(self, index: int, rng: np.random.Generator,
              short: int | None = None) -> tuple[Tensor, dict[str, Tensor], dict]:
        window = None
        if self.slots is not None:
            rec, window, rgb, boxes, labels, ignore = self._window(index)
        else:
            rec = self.records[index]
            rgb = read_image_rgb(rec.image_path, max_pixels=self.input_cfg.max_pixels)
            if rgb.shape[:2] != (rec.height, rec.width):
                raise DataError(f"{rec.image_path}: image is {rgb.shape[1]}x{rgb.shape[0]} but its annotation says "
                                f"{rec.width}x{rec.height}")
            boxes, labels, ignore = rec.boxes, rec.labels, rec.ignore
        # step-wise training's stored proposals (never with crops: detres.data.proposals refuses the two together)
        proposals = None if self.proposals is None else self.proposals[str(rec.image_id)].numpy()
        cfg = self.input_cfg
        if self.train and self.augment is not None:  # boxes it drops may leave no box: a negative image, still valid
            rgb, boxes, labels, ignore, proposals = augment_with_proposals(
                self.augment, rgb, boxes, labels, ignore, augment_rng(self.seed, self.epoch, index), proposals)
        if short is None:
            short = int(rng.choice(self.train_scales)) if self.train else cfg.test_scale
        max_size = round(short * self.max_size_ratio) if self.train and self.max_size_ratio > 0 else cfg.max_size
        flip = bool(self.train and cfg.flip and rng.random() < 0.5)
        image, boxes, labels, ignore, scale = resize_and_flip(rgb, boxes, labels, ignore, short=short,
                                                              max_size=max_size, flip=flip)
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                  "ignore": torch.from_numpy(ignore)}
        if proposals is not None:  # in the augmented image's pixels: the same resize and flip as the boxes
            target["proposals"] = proposals_to_image(torch.as_tensor(proposals, dtype=torch.float32), scale=scale,
                                                     flipped=flip, width=image.shape[1])
        meta = {"image_id": rec.image_id, "orig_size": (rec.height, rec.width), "scale": scale, "flipped": flip,
                "file": rec.image_path}
        if window is not None:  # data.train_crop: the window of the original image that the item shows
            meta["window"] = window
        return normalize_to_tensor(image, self.pixel_mean, self.pixel_std), target, meta


    def _window(self, item: int) -> tuple[DetRecord, tuple[int, int, int, int], np.ndarray, np.ndarray, np.ndarray,
                                          np.ndarray]:
        """(record, window (x0, y0, w, h), its pixels, boxes, labels, ignore flags) of item `item` (data.train_crop)."""
        slot = self.slots[item]
        rec = self.records[slot.image]
        window = draw_window(slot, rec.width, rec.height, rec.boxes, rec.ignore, self.crop, self.seed, self.epoch,
                             item)
        if window == (0, 0, rec.width, rec.height):  # an image no larger than the crop: read it as it is
            rgb = read_image_rgb(rec.image_path, max_pixels=self.input_cfg.max_pixels)
            if rgb.shape[:2] != (rec.height, rec.width):
                raise DataError(f"{rec.image_path}: image is {rgb.shape[1]}x{rgb.shape[0]} but its annotation "
                                f"says {rec.width}x{rec.height}")
        else:
            rgb = self.reader.read(rec.image_path, window, (rec.width, rec.height))
        return rec, window, rgb, *crop_boxes(rec.boxes, rec.labels, rec.ignore, window, self.crop.min_visibility)


def read_records(ds: DatasetConfig, *, where: str = "data.train / data.test") -> tuple[list[DetRecord], ClassMap]:
    """The records and class map of a dataset config, by its format (detres.data.formats). `where` names the config
    section in errors; a split that is not where the config says gets where it was looked for and how to get it."""
    entry = detection_format(ds, where=where)
    if str(split_path(ds)) not in ("", ".") and not split_path(ds).exists():
        raise DataError(f"{ds.format} dataset not found: {where}.{entry.path_key}={split_path(ds)} does not exist "
                        f"(looked for it from {Path.cwd()}). Get it as datasets/README.md says (section 'Getting the "
                        f"data', {entry.source}) and put it there, or set {where}.{entry.path_key} to your copy")
    return entry.read(ds)


def read_split(data: DataConfig, split: str, *, seed: int = 0) -> tuple[list[DetRecord], ClassMap]:
    """The records of data.<split> ("train" or "test"), the demo's synthetic set generated first when
    `data.generate_demo` names its script and the split is absent: what every tool reads a dataset through."""
    ds = getattr(data, split)
    ensure_split_data(data, ds, seed=seed)
    return read_records(ds, where=f"data.{split}")


def build_split(data: DataConfig, split: str, *, pixel_mean: list[float], pixel_std: list[float], train: bool,
                seed: int = 0) -> DetectionDataset:
    """`build_detection_dataset` of data.<split> with the config's input settings (and data.augment and
    data.train_crop in training),
    generating the demo's set first as `read_split` does."""
    ds = getattr(data, split)
    ensure_split_data(data, ds, seed=seed)
    return build_detection_dataset(ds, input_cfg=data.input, pixel_mean=pixel_mean, pixel_std=pixel_std, train=train,
                                   seed=seed, augment=data.augment if train else None,
                                   augment_min_visibility=data.augment_min_visibility, where=f"data.{split}",
                                   crop=TrainCrop.from_config(data) if train else None)


def build_detection_dataset(ds: DatasetConfig, *, input_cfg: InputConfig, pixel_mean: list[float],
                            pixel_std: list[float], train: bool, seed: int = 0,
                            augment: list[dict] | None = None, augment_min_visibility: float = 0.1,
                            where: str = "data.train / data.test",
                            crop: TrainCrop | None = None) -> DetectionDataset:
    """Dataset for training (images without usable boxes dropped; difficult boxes too unless use_difficult)
    or for evaluation (every image kept). `augment`: data.augment entries, `crop`: data.train_crop
    (TrainCrop.from_config), both used in training only."""
    pipeline = build_augment(list(augment or []), min_visibility=augment_min_visibility) if train else None
    records, class_map = read_records(ds, where=where)
    if train:
        if ds.use_difficult and ds.format == "voc":
            records = [DetRecord(r.image_path, r.image_id, r.width, r.height, r.boxes, r.labels,
                                 np.zeros_like(r.ignore)) for r in records]
        records = [r for r in records if r.num_trainable > 0]
    if not records:
        where = ds.ann_file or ds.root
        raise DataError(f"dataset {where} ({ds.format}) has no {'annotated ' if train else ''}images; "
                        "check the paths and split in the config")
    if not Path(records[0].image_path).parent.is_dir():
        raise DataError(f"image folder not found: {Path(records[0].image_path).parent} "
                        "(data.*.image_dir / data.*.root)")
    return DetectionDataset(records=records, class_map=class_map, input_cfg=input_cfg, pixel_mean=pixel_mean,
                            pixel_std=pixel_std, train=train, seed=seed, augment=pipeline, crop=crop)
