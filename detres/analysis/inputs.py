"""The report's inputs as tools/eval_det.py takes them: ground truth as COCO json or a VOCdevkit tree, and a COCO
results file from any toolkit."""

from __future__ import annotations

import json
from pathlib import Path

from detres.data.coco import read_coco
from detres.data.records import ClassMap, DetRecord
from detres.data.voc import read_voc
from detres.errors import DataError
from detres.evaluation.coco import category_ids


def read_ground_truth(gt: Path, split: str, image_dir: Path | None = None
                      ) -> tuple[list[DetRecord], ClassMap, str | None]:
    """(records, class map, COCO json path or None): a folder is read as VOCdevkit with `split` (YEAR:SPLIT),
    a file as COCO json with its images in `image_dir` (default: the json's folder)."""
    if gt.is_dir():
        records, class_map = read_voc(gt, [split])
        return records, class_map, None
    records, class_map = read_coco(gt, image_dir or gt.parent)
    return records, class_map, str(gt)


def read_results(path: Path, class_map: ClassMap, image_ids: set[int]) -> list[dict]:
    """A COCO results list, each entry checked and reduced to image_id, category_id, bbox (xywh), score."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read results file {path}: {exc}") from None
    if not isinstance(results, list):
        raise DataError(f"{path}: a COCO results file is a list of {{image_id, category_id, bbox, score}}")
    known = set(category_ids(class_map))
    out = []
    for i, r in enumerate(results):
        try:
            entry = {"image_id": int(r["image_id"]), "category_id": r["category_id"],
                     "bbox": [float(v) for v in r["bbox"]], "score": float(r["score"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: entry {i} is not a valid detection ({exc!r})") from None
        if len(entry["bbox"]) != 4 or entry["category_id"] not in known:
            raise DataError(f"{path}: entry {i} has bbox {r['bbox']} / category_id {r['category_id']!r}; expected "
                            f"[x, y, w, h] and one of the ground truth's category ids {sorted(known)}")
        if entry["image_id"] not in image_ids:
            raise DataError(f"{path}: entry {i} has image_id {entry['image_id']}, which the ground truth lacks")
        out.append(entry)
    return out
