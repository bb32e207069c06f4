"""PASCAL VOC xml (and VOC-style sets): hardened xml parsing, 1-based pixels to XYXY once, difficult kept.

Sets written by labelling tools (labelImg, CVAT) read too: images in JPEGImages with any common extension, found
by the stem of their xml, and a <filename> in the xml that names another file than the one on disk.
"""

from __future__ import annotations

import logging
import os
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


# VOC's own .jpg first: when two files share a stem, the first extension in this order is the image
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


def images_by_stem(folder: Path) -> dict[str, str]:
    """{stem: file name} of the image files in `folder` (one listing, not a stat per image and extension)."""
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            ext = ext.lower()
            if ext in rank and (stem not in found or rank[ext] < rank[os.path.splitext(found[stem])[1].lower()]):
                found[stem] = entry.name
    return found


def voc_image_path(folder: Path, stem: str, xml: Path, on_disk: dict[str, str]) -> Path:
    """The image of annotation `stem`: the file on disk with that stem, whatever its extension.

    The xml's <filename> is trusted only when no file has the stem: labelImg and CVAT write the name the image had
    when it was labelled (renamed or re-encoded since, e.g. photo.JPG -> 000123.png), so it often disagrees with
    the file that the ImageSets listing, the xml's own name and JPEGImages agree on. Nothing found: <stem>.jpg, which
    the image reader then reports as missing.
    """
    if stem in on_disk:
        return folder / on_disk[stem]
    written = _xml_filename(xml)
    if written and (folder / Path(written).name).is_file():
        return folder / Path(written).name
    return folder / f"{stem}.jpg"


def _xml_filename(path: Path) -> str:
    try:
        node = SafeElementTree.parse(path).getroot().find("filename")
    except (ParseError, DefusedXmlException, OSError):
        return ""
    return (node.text or "").strip() if node is not None else ""


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
        on_disk = images_by_stem(year_dir / "JPEGImages")
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
                image_path=str(voc_image_path(year_dir / "JPEGImages", stem, xml, on_disk)),
                image_id=image_id_start + len(records),
                width=width, height=height, boxes=boxes[keep],
                labels=np.array([label_of[o[0]] for o in objects], np.int64)[keep],
                ignore=np.array([o[2] for o in objects], bool)[keep]))
    if dropped:
        log.warning("%s: dropped %d degenerate boxes (zero or negative area after clipping)", root, dropped)
    return records, ClassMap(names=list(names or []), dataset_ids=list(names or []))
