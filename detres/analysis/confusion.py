"""Confusion matrix of classes plus background at one IoU and score threshold.

Rows are the true class (last row: background, i.e. detections on no object), columns the predicted class (last
column: background, i.e. objects no detection found). Written by hand (a dozen lines) because the libraries that
have one (mmdet's confusion_matrix.py) count a detection once per overlapping object; here each detection, in
descending score order, takes one still-free object: of its own class if one overlaps enough, else the one it
overlaps most. Ignored (crowd / difficult) objects absorb the detections on them and count nowhere.
"""

from __future__ import annotations

import numpy as np
from pycocotools.coco import COCO

from detres.analysis.tide import _xyxy, iou_matrix


def confusion_matrix(gt: COCO, results: list[dict], *, iou_thresh: float, score_thresh: float) -> np.ndarray:
    """[C+1, C+1] counts in the order of gt's sorted category ids, then background."""
    cats = sorted(gt.getCatIds())
    col = {c: i for i, c in enumerate(cats)}
    bg = len(cats)
    matrix = np.zeros((bg + 1, bg + 1), np.int64)
    by_image: dict[int, list[dict]] = {}
    for r in results:
        if r["score"] >= score_thresh:
            by_image.setdefault(r["image_id"], []).append(r)
    for image in gt.getImgIds():
        anns = gt.imgToAnns.get(image, [])
        dets = sorted(by_image.get(image, []), key=lambda r: -r["score"])
        gt_boxes = np.array([_xyxy(a["bbox"]) for a in anns], np.float64).reshape(-1, 4)
        ious = iou_matrix(np.array([_xyxy(d["bbox"]) for d in dets], np.float64).reshape(-1, 4), gt_boxes)
        crowd = np.array([bool(a.get("iscrowd", 0) or a.get("ignore", 0)) for a in anns], bool)
        gt_cat = np.array([a["category_id"] for a in anns])
        free = ~crowd
        for row, d in enumerate(dets):
            overlap = (ious[row] >= iou_thresh) & free
            if overlap.any():
                same = overlap & (gt_cat == d["category_id"])
                pick = same if same.any() else overlap
                g = int(np.argmax(np.where(pick, ious[row], -1.0)))
                free[g] = False
                matrix[col[gt_cat[g]], col[d["category_id"]]] += 1
            elif not ((ious[row] >= iou_thresh) & crowd).any():
                matrix[bg, col[d["category_id"]]] += 1  # a detection on no object
        for g in np.nonzero(free)[0]:
            matrix[col[gt_cat[g]], bg] += 1  # an object no detection took
    return matrix
