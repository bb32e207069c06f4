"""COCO-format json (any dataset in that format): validated, boxes to XYXY once, category ids to labels 1..C."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from detres.data.records import ClassMap, DetRecord, clip_and_filter
from detres.errors import DataError

log = logging.getLogger("detres.data")


def _require(entry: dict, keys: dict[str, tuple], where: str) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: must be a json object with keys {', '.join(keys)}, got {entry!r}")
    for key, types in keys.items():
        if key not in entry:
            raise DataError(f"{where}: missing key '{key}'")
        if not isinstance(entry[key], types) or isinstance(entry[key], bool):
            raise DataError(f"{where}: '{key}' must be {'/'.join(t.__name__ for t in types)}, got {entry[key]!r}")


def load_coco_json(ann_file: str | Path) -> dict:
    """Read and structurally check a COCO json; DataError naming the file and the bad entry."""
    path = Path(ann_file)
    if not path.is_file():
        raise DataError(f"COCO annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: malformed json: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a json object with images/annotations/categories")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing or non-list '{key}'")
    data.setdefault("annotations", [])
    if not isinstance(data["annotations"], list):
        raise DataError(f"{path}: 'annotations' must be a list")
    seen: set[int] = set()
    for i, img in enumerate(data["images"]):
        _require(img, {"id": (int,), "file_name": (str,), "width": (int,), "height": (int,)}, f"{path}: images[{i}]")
        if img["width"] <= 0 or img["height"] <= 0:
            size = f"{img['width']}x{img['height']}"
            raise DataError(f"{path}: images[{i}] (id {img['id']}) has non-positive size {size}")
        if img["id"] in seen:
            raise DataError(f"{path}: duplicate image id {img['id']} (images[{i}]); image ids must be unique")
        seen.add(img["id"])
    category_ids: set[int] = set()
    for i, cat in enumerate(data["categories"]):
        _require(cat, {"id": (int,), "name": (str,)}, f"{path}: categories[{i}]")
        if cat["id"] in category_ids:
            raise DataError(f"{path}: duplicate category id {cat['id']} (categories[{i}]); category ids must be unique")
        category_ids.add(cat["id"])
    return data


def read_coco(ann_file: str | Path, image_dir: str | Path) -> tuple[list[DetRecord], ClassMap]:
    """Records for every image (empty ones included) and the category map, categories sorted by id."""
    path = Path(ann_file)
    data = load_coco_json(path)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    class_map = ClassMap(names=[c["name"] for c in cats], dataset_ids=[c["id"] for c in cats])
    label_of = {c["id"]: i + 1 for i, c in enumerate(cats)}
    per_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        _require(ann, {"image_id": (int,), "category_id": (int,), "bbox": (list,)}, where)
        if ann["image_id"] not in per_image:
            raise DataError(f"{where}: image_id {ann['image_id']} points to no image in 'images'")
        if ann["category_id"] not in label_of:
            raise DataError(f"{where}: category_id {ann['category_id']} is not in 'categories'")
        if ann.get("iscrowd", 0) not in (0, 1):
            raise DataError(f"{where}: iscrowd must be 0 or 1, got {ann['iscrowd']!r}")
        bbox = ann["bbox"]
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
            raise DataError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        per_image[ann["image_id"]].append(ann)
    records, dropped = [], 0
    for img in data["images"]:
        anns = per_image[img["id"]]
        xywh = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # COCO xywh -> XYXY, once
        boxes, keep = clip_and_filter(xyxy, img["width"], img["height"])
        dropped += int((~keep).sum())
        labels = np.array([label_of[a["category_id"]] for a in anns], np.int64)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
        records.append(DetRecord(image_path=str(Path(image_dir) / img["file_name"]), image_id=img["id"],
                                 width=img["width"], height=img["height"], boxes=boxes[keep],
                                 labels=labels[keep], ignore=crowd[keep]))
    if dropped:
        log.warning("%s: dropped %d degenerate boxes (zero or negative area after clipping to the image)", path,
                    dropped)
    return records, class_map
