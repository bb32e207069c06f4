"""PASCAL VOC xml (and VOC-style sets): hardened xml parsing, 1-based pixels to XYXY once, difficult kept."""

from __future__ import annotations

import logging
from pathlib import Path
from xml.etree.ElementTree import ParseError

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeElementTree

from detres.data.records import ClassMap, DetRecord, clip_and_filter
from detres.errors import DataError

log = logging.getLogger("detres.data")

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]


def parse_voc_xml(path: Path) -> tuple[int, int, list[tuple[str, list[float], bool]]]:
    """(width, height, [(name, [xmin, ymin, xmax, ymax] as in the file, difficult)]); DataError naming the file.

    defusedxml refuses entity-expansion ("billion laughs") and external-entity payloads.
    """
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        root = SafeElementTree.parse(path).getroot()
    except (ParseError, DefusedXmlException) as exc:
        raise DataError(f"{path}: malformed or unsafe xml: {exc}") from None
    try:
        size = root.find("size")
        width, height = int(size.find("width").text), int(size.find("height").text)
        objects = []
        for obj in root.findall("object"):
            box = obj.find("bndbox")
            coords = [float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
            difficult = obj.find("difficult")
            objects.append((obj.find("name").text.strip(), coords,
                            difficult is not None and (difficult.text or "0").strip() == "1"))
    except (AttributeError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: missing or non-numeric field (size/width/height, object/name, bndbox/xmin..): "
                        f"{exc}") from None
    if width <= 0 or height <= 0:
        raise DataError(f"{path}: <size> says {width}x{height}; write the image's real width and height there")
    return width, height, objects


def voc_class_names(year_dir: Path) -> list[str]:
    """The 20 VOC classes, or the names in `classes.txt` of the year folder for other VOC-style sets."""
    listing = year_dir / "classes.txt"
    if listing.is_file():
        return [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    return list(VOC_CLASSES)


def read_voc(root: str | Path, sets: list[str], *, class_names: list[str] | None = None,
             image_id_start: int = 0) -> tuple[list[DetRecord], ClassMap]:
    """Records for `sets` like ["2007:trainval", "2012:trainval"] under a VOCdevkit root: their union, each image
    once even when sets overlap ("2007:train" with "2007:trainval").

    VOC pixels are 1-based and inclusive: XYXY = (xmin - 1, ymin - 1, xmax, ymax). Image ids are the running
    index of the image over the sets (VOC has none of its own).
    """
    root = Path(root)
    records: list[DetRecord] = []
    seen: set[tuple[str, str]] = set()
    names = class_names
    dropped = 0
    for entry in sets:
        year, sep, split = entry.partition(":")
        if not sep:
            raise DataError(f"VOC set {entry!r} must be YEAR:SPLIT, e.g. 2007:trainval")
        year_dir = root / f"VOC{year}"
        names = names or voc_class_names(year_dir)
        label_of = {n: i + 1 for i, n in enumerate(names)}
        listing = year_dir / "ImageSets" / "Main" / f"{split}.txt"
        if not listing.is_file():
            raise DataError(f"VOC image set not found: {listing}")
        for stem in (line.split()[0] for line in listing.read_text().splitlines() if line.strip()):
            if (year, stem) in seen:
                continue  # a union: an image listed by two sets is one image, with one id
            seen.add((year, stem))
            xml = year_dir / "Annotations" / f"{stem}.xml"
            width, height, objects = parse_voc_xml(xml)
            unknown = [o[0] for o in objects if o[0] not in label_of]
            if unknown:
                raise DataError(f"{xml}: unknown class {unknown[0]!r}; known: {', '.join(names)}")
            raw = np.array([o[1] for o in objects], np.float32).reshape(-1, 4)
            raw[:, :2] -= 1.0  # 1-based inclusive pixels -> continuous coordinates
            boxes, keep = clip_and_filter(raw, width, height)
            dropped += int((~keep).sum())
            records.append(DetRecord(
                image_path=str(year_dir / "JPEGImages" / f"{stem}.jpg"), image_id=image_id_start + len(records),
                width=width, height=height, boxes=boxes[keep],
                labels=np.array([label_of[o[0]] for o in objects], np.int64)[keep],
                ignore=np.array([o[2] for o in objects], bool)[keep]))
    if dropped:
        log.warning("%s: dropped %d degenerate boxes (zero or negative area after clipping)", root, dropped)
    return records, ClassMap(names=list(names or []), dataset_ids=list(names or []))
