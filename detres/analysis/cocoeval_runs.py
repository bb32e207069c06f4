"""COCOeval runs the analysis needs: quiet, on chosen IoU thresholds, categories, ranges and ignore flags.

The analyses (Hoiem's breakdown, TIDE-style attribution, AP by aspect ratio) are defined as COCOeval re-run on
modified ground truth or detections; this module is the one place that builds those runs.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ALL_AREA = [0.0, 1e10]


class FlaggedCOCOeval(COCOeval):
    """COCOeval that also ignores ground truth flagged `ignored_split`, as the COCO analyze() code marks the
    ground truth it relabels; pycocotools alone ignores only crowds, whose IoU it computes differently."""

    def _prepare(self) -> None:
        super()._prepare()
        for gts in self._gts.values():
            for g in gts:
                if g.get("ignored_split"):
                    g["ignore"] = 1


def coco_from_dataset(dataset: dict) -> COCO:
    """A pycocotools COCO built from an in-memory dataset dict, without its prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def detections_coco(gt: COCO, results: list[dict]) -> COCO:
    """Results list (xywh) -> a COCO object over gt's images and categories; unlike COCO.loadRes it accepts an
    empty list and leaves the caller's dicts untouched."""
    anns = []
    for i, r in enumerate(results):
        x, y, w, h = r["bbox"]
        anns.append({"id": i + 1, "image_id": r["image_id"], "category_id": r["category_id"],
                     "bbox": [x, y, w, h], "score": r["score"], "area": r.get("area", w * h), "iscrowd": 0})
    return coco_from_dataset({"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                              "annotations": anns})


def run_cocoeval(gt: COCO, dt: COCO, *, iou_thrs: list[float], cat_ids: list[int] | None = None,
                 area_rng: list[list[float]] | None = None, area_lbl: list[str] | None = None,
                 max_det: int = 100) -> FlaggedCOCOeval:
    """Evaluated and accumulated COCOeval (bbox) with these parameters; `eval['precision']` is
    [T, 101 recalls, K, A, 1] with -1 where a category has no ground truth."""
    ev = FlaggedCOCOeval(gt, dt, iouType="bbox")
    ev.params.iouThrs = np.array(iou_thrs, np.float64)
    ev.params.maxDets = [max_det]
    ev.params.areaRng = area_rng or [ALL_AREA]
    ev.params.areaRngLbl = area_lbl or ["all"]
    if cat_ids is not None:
        ev.params.catIds = list(cat_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def mean_ap(precision: np.ndarray) -> float:
    """Mean of a COCOeval precision slice over its valid (> -1) entries: COCO's AP; NaN when nothing is valid."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else float("nan")


def per_class_ap(precision: np.ndarray) -> np.ndarray:
    """[T, R, K] precision -> [K] AP (NaN for categories without ground truth)."""
    return np.array([mean_ap(precision[:, :, k]) for k in range(precision.shape[2])])
