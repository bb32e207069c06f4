"""The detection dataset formats detres reads, listed once: a new format is one reader file and one entry here.

Each entry says how to read a split (`DatasetConfig` -> records and class map), which config key locates it, where
datasets/README.md says how to get it, and which metrics evaluate it by default. The readers (detres.data.detection),
the demo generator (detres.data.demo_data), evaluation and the tools take all of it from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from detres.config import DatasetConfig
from detres.data.coco import read_coco
from detres.data.imagenet_det import read_imagenet_det
from detres.data.records import ClassMap, DetRecord
from detres.data.voc import read_voc
from detres.errors import ConfigError


@dataclass(frozen=True)
class DetectionFormat:
    """One dataset format (`data.train.format` / `data.test.format`)."""

    read: Callable[[DatasetConfig], tuple[list[DetRecord], ClassMap]]
    path_key: str  # the DatasetConfig field naming the file or folder that holds a split
    source: str  # the name of datasets/README.md's section on getting it
    default_metrics: tuple[str, ...]  # test.eval_metrics when the config gives none
    coco_json: bool = False  # the split is a COCO json, which COCO evaluation reads as it is (its 'area' fields)
    ignore_word: str = "ignored"  # what a box with ignore=True is called in this format (VOC: difficult)


def _read_coco(ds: DatasetConfig) -> tuple[list[DetRecord], ClassMap]:
    if not ds.ann_file:
        raise ConfigError("a coco dataset needs ann_file (data.train.ann_file / data.test.ann_file)")
    return read_coco(ds.ann_file, ds.image_dir or ds.root)


def _read_voc(ds: DatasetConfig) -> tuple[list[DetRecord], ClassMap]:
    if not ds.sets:
        raise ConfigError("a voc dataset needs sets, e.g. data.train.sets=['2007:trainval','2012:trainval']")
    return read_voc(ds.root, ds.sets)


FORMATS: dict[str, DetectionFormat] = {
    "coco": DetectionFormat(read=_read_coco, path_key="ann_file", source="COCO", default_metrics=("coco",),
                            coco_json=True),
    "voc": DetectionFormat(read=_read_voc, path_key="root", source="PASCAL VOC",
                           default_metrics=("voc07", "voc", "coco"), ignore_word="difficult"),
    "imagenet_det": DetectionFormat(read=lambda ds: read_imagenet_det(ds.root, ds.split), path_key="root",
                                    source="ImageNet DET", default_metrics=("imagenet_det",)),
}


def detection_format(ds: DatasetConfig, *, where: str = "data.train / data.test") -> DetectionFormat:
    """The entry of `ds.format`; ConfigError listing the known formats for another name."""
    if ds.format not in FORMATS:
        raise ConfigError(f"{where}.format={ds.format!r} is not a detection format; use one of {', '.join(FORMATS)}")
    return FORMATS[ds.format]


def split_path(ds: DatasetConfig) -> Path:
    """The file or folder that holds a split (its format's path_key: a COCO set's json, else its root)."""
    entry = FORMATS.get(ds.format)
    return Path(getattr(ds, entry.path_key) if entry else ds.root)


def coco_gt_file(ds: DatasetConfig) -> str | None:
    """The split's own COCO json when COCO evaluation can read it directly, else None (built from the records)."""
    entry = FORMATS.get(ds.format)
    return ds.ann_file if entry is not None and entry.coco_json else None
