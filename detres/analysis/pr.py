"""Precision/recall: COCOeval's interpolated PR curves per class, and precision, recall and F1 against the score
threshold with the best-F1 operating point, from the IoU-0.5 matches of one COCOeval run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools.cocoeval import COCOeval


@dataclass
class Matches:
    """Every detection and ground truth of one COCOeval run (one IoU threshold, all areas, maxDets 100).

    det_*: [D] per evaluated detection: annotation id, image id, category id, score, matched gt id (0: none),
    ignored (matched a crowd/ignored gt: counts neither way). gt_*: [G] id, image id, category id, ignored.
    """

    det_id: np.ndarray
    det_image: np.ndarray
    det_cat: np.ndarray
    det_score: np.ndarray
    det_match: np.ndarray
    det_ignored: np.ndarray
    gt_id: np.ndarray
    gt_image: np.ndarray
    gt_cat: np.ndarray
    gt_ignored: np.ndarray


def matches_of(ev: COCOeval, t: int = 0) -> Matches:
    """The matches at IoU index `t` of an evaluated COCOeval whose first area range is 'all'."""
    p = ev.params
    num_area, num_img = len(p.areaRng), len(p.imgIds)
    cols: dict[str, list] = {k: [] for k in Matches.__dataclass_fields__}
    for k, cat in enumerate(p.catIds):
        for i, image in enumerate(p.imgIds):
            e = ev.evalImgs[k * num_area * num_img + i]  # area index 0
            if e is None:
                continue
            n = len(e["dtIds"])
            cols["det_id"] += e["dtIds"]
            cols["det_image"] += [image] * n
            cols["det_cat"] += [cat] * n
            cols["det_score"] += list(e["dtScores"])
            cols["det_match"] += list(np.asarray(e["dtMatches"])[t]) if n else []
            cols["det_ignored"] += list(np.asarray(e["dtIgnore"])[t].astype(bool)) if n else []
            cols["gt_id"] += e["gtIds"]
            cols["gt_image"] += [image] * len(e["gtIds"])
            cols["gt_cat"] += [cat] * len(e["gtIds"])
            cols["gt_ignored"] += list(np.asarray(e["gtIgnore"]).astype(bool))
    types = {"det_score": np.float64, "det_ignored": bool, "gt_ignored": bool}
    return Matches(**{k: np.asarray(v, types.get(k, np.int64)) for k, v in cols.items()})


@dataclass
class ScoreCurve:
    """Precision, recall and F1 of the detections scoring >= each threshold (thresholds descending)."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    num_gt: int

    def best(self) -> dict[str, float]:
        """The best-F1 operating point: its score threshold, F1, precision and recall (NaN when undefined)."""
        if not len(self.f1) or self.num_gt == 0:
            return {"best_f1_thresh": float("nan"), "best_f1": float("nan"), "precision_at_best": float("nan"),
                    "recall_at_best": float("nan")}
        i = int(np.argmax(self.f1))
        return {"best_f1_thresh": float(self.thresholds[i]), "best_f1": float(self.f1[i]),
                "precision_at_best": float(self.precision[i]), "recall_at_best": float(self.recall[i])}


def score_curve(m: Matches, cat: int | None = None) -> ScoreCurve:
    """The curve of category `cat` (None: all categories pooled), ignored detections and gt left out."""
    det = ~m.det_ignored & ((m.det_cat == cat) if cat is not None else True)
    num_gt = int((~m.gt_ignored & ((m.gt_cat == cat) if cat is not None else True)).sum())
    scores, tp = m.det_score[det], (m.det_match[det] > 0).astype(np.float64)
    order = np.argsort(-scores, kind="mergesort")
    scores, tp = scores[order], np.cumsum(tp[order])
    if not len(scores):
        empty = np.zeros(0)
        return ScoreCurve(empty, empty, empty, empty, num_gt)
    last = np.r_[scores[1:] != scores[:-1], True]  # one point per distinct score: all its ties are in
    tp, count, thresholds = tp[last], (np.nonzero(last)[0] + 1).astype(np.float64), scores[last]
    precision = tp / count
    recall = tp / max(num_gt, 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return ScoreCurve(thresholds, precision, recall, f1, num_gt)


def pr_curve(ev: COCOeval, *, iou: float, k: int | None, area: int = 0) -> np.ndarray:
    """COCOeval's interpolated precision at its 101 recall points for IoU `iou`, category index `k` (None: the
    mean over categories with ground truth), maxDets 100; [101] with NaN where undefined. Its mean is the AP."""
    t = int(np.argmin(np.abs(ev.params.iouThrs - iou)))
    precision = ev.eval["precision"][t, :, :, area, -1]  # [R, K]
    if k is not None:
        curve = precision[:, k].astype(np.float64)
        return np.where(curve > -1, curve, np.nan)
    valid = precision[0] > -1
    return precision[:, valid].mean(1) if valid.any() else np.full(precision.shape[0], np.nan)
