"""AP by object size (COCO's small/medium/large) and by aspect ratio, each as COCOeval's area-range rule.

For aspect ratio the same rule applies with width/height in place of area: objects outside the bin are ignored,
and so are unmatched detections outside it. COCOeval reads only the `area` field for its ranges, so the bins are
evaluated by giving every box its aspect ratio as `area` and the bins as area ranges.
"""

from __future__ import annotations

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detres.analysis.cocoeval_runs import coco_from_dataset, detections_coco, mean_ap, run_cocoeval

# width / height bins: [low, high) with labels; 1:1 sits in the middle
ASPECT_BINS = [("tall", 0.0, 0.5), ("tallish", 0.5, 0.8), ("square", 0.8, 1.25), ("wideish", 1.25, 2.0),
               ("wide", 2.0, 1e6)]
ASPECT_HELP = "width / height: tall < 1:2 <= tallish < 4:5 <= square < 5:4 <= wideish < 2:1 <= wide"


def _aspect(bbox: list[float]) -> float:
    return float(bbox[2]) / max(float(bbox[3]), 1e-6)


def ap_by_bins(gt: COCO, results: list[dict], bins: list[tuple[str, float, float]], *,
               value=None) -> dict[str, dict[str, float]]:
    """{bin: {AP, AP50, num_gt}} (AP in percent, NaN when the bin has no object); `value(bbox)` replaces each
    box's area for the range test (None: COCO's own area)."""
    if value is not None:
        gt = coco_from_dataset({**gt.dataset, "annotations": [{**a, "area": value(a["bbox"])}
                                                               for a in gt.dataset["annotations"]]})
        results = [{**r, "area": value(r["bbox"])} for r in results]
    # COCOeval's ranges are closed; nudging the upper end keeps the bins [low, high) and disjoint
    ranges = [[lo, np.nextafter(hi, 0)] for _, lo, hi in bins]
    ev = run_cocoeval(gt, detections_coco(gt, results), iou_thrs=list(np.linspace(0.5, 0.95, 10)),
                      area_rng=ranges, area_lbl=[name for name, _, _ in bins])
    out = {}
    for a, (name, lo, hi) in enumerate(bins):
        area = np.array([x.get("area", x["bbox"][2] * x["bbox"][3]) for x in gt.dataset["annotations"]
                         if not x.get("iscrowd", 0)])
        precision = ev.eval["precision"][:, :, :, a, -1]
        out[name] = {"AP": 100.0 * mean_ap(precision), "AP50": 100.0 * mean_ap(precision[0]),
                     "num_gt": int(((area >= lo) & (area < hi)).sum())}
    return out


def ap_by_size(ev: COCOeval) -> dict[str, dict[str, float]]:
    """{small|medium|large: {AP, AP50, num_gt}} from a COCOeval run with COCO's default area ranges."""
    out = {}
    for a, name in enumerate(ev.params.areaRngLbl):
        if name == "all":
            continue
        lo, hi = ev.params.areaRng[a]
        precision = ev.eval["precision"][:, :, :, a, -1]
        num_gt = sum(1 for g in ev.cocoGt.dataset["annotations"] if not g.get("iscrowd", 0) and lo <= g["area"] <= hi)
        out[name] = {"AP": 100.0 * mean_ap(precision), "AP50": 100.0 * mean_ap(precision[0]), "num_gt": num_gt}
    return out


def ap_by_aspect(gt: COCO, results: list[dict]) -> dict[str, dict[str, float]]:
    return ap_by_bins(gt, results, ASPECT_BINS, value=_aspect)
