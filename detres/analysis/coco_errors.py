"""The classic COCO error analysis (Hoiem et al. 2012, as the COCO site and Detectron's analyze() present it).

Seven PR curves per category, each a COCOeval re-run that forgives one more kind of error; their areas stack:
  C75: PR at IoU .75;  C50: PR at IoU .50;  Loc: PR at IoU .10 (localization errors forgiven, duplicates not);
  Sim: Loc after false positives on other categories of the same supercategory are removed;
  Oth: Loc after false positives on any other category are removed;
  BG:  Oth after all background false positives are removed (precision 1 wherever recall is reached);
  FN:  after every remaining error is removed (precision 1 at every recall: the missing recall is false negatives).
Written here because pycocotools' analyze() exists only in the COCO Matlab API and no maintained package
computes it. A confused ground truth is relabelled to the category and ignored (matched detections count neither
way), exactly as that code does.
"""

from __future__ import annotations

import numpy as np
from pycocotools.coco import COCO

from detres.analysis.cocoeval_runs import coco_from_dataset, detections_coco, run_cocoeval

KINDS = ["C75", "C50", "Loc", "Sim", "Oth", "BG", "FN"]


def _relabelled_gt(gt: COCO, cat: int, confusable: set[int]) -> COCO:
    """gt where annotations of the `confusable` categories become ignored annotations of `cat`."""
    anns = []
    for a in gt.dataset["annotations"]:
        if a["category_id"] in confusable:
            a = {**a, "category_id": cat, "ignored_split": 1}
        anns.append(a)
    return coco_from_dataset({**gt.dataset, "annotations": anns})


def hoiem_curves(gt: COCO, results: list[dict]) -> dict[int, np.ndarray]:
    """{category id: [7, 101] precision (KINDS order) at COCOeval's 101 recall points; NaN where the category has
    no ground truth}. Areas: all; maxDets 100."""
    supercat = {c["id"]: c.get("supercategory") or c["name"] for c in gt.dataset["categories"]}
    cats = sorted(supercat)
    out: dict[int, np.ndarray] = {}
    for cat in cats:
        mine = [r for r in results if r["category_id"] == cat]
        dt = detections_coco(gt, mine)
        ps = np.empty((7, 101))
        ps[:3] = run_cocoeval(gt, dt, iou_thrs=[0.75, 0.5, 0.1], cat_ids=[cat]).eval["precision"][:, :, 0, 0, 0]
        similar = {c for c in cats if supercat[c] == supercat[cat] and c != cat}
        others = {c for c in cats if c != cat}
        for row, confusable in ((3, similar), (4, others)):
            relabelled = _relabelled_gt(gt, cat, confusable)
            ev = run_cocoeval(relabelled, detections_coco(relabelled, mine), iou_thrs=[0.1], cat_ids=[cat])
            ps[row] = ev.eval["precision"][0, :, 0, 0, 0]
        if (ps[0] == -1).all():  # no ground truth of this category
            out[cat] = np.full((7, 101), np.nan)
            continue
        ps[5] = (ps[4] > 0).astype(np.float64)  # BG: every reached recall at precision 1
        ps[6] = 1.0  # FN
        out[cat] = ps
    return out


def curve_areas(curves: np.ndarray) -> dict[str, float]:
    """[7, 101] curves -> {kind: area} (the mean over the 101 recall points, COCO's AP)."""
    return {kind: float(np.mean(curves[i])) for i, kind in enumerate(KINDS)}


def mean_curves(per_cat: dict[int, np.ndarray]) -> np.ndarray:
    """The curves averaged over categories with ground truth ([7, 101]; NaN when there is none)."""
    valid = [c for c in per_cat.values() if not np.isnan(c).all()]
    return np.mean(valid, axis=0) if valid else np.full((7, 101), np.nan)
