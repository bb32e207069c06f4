"""fp32 and int8 mAP of an export on annotated images (detres.deploy.int8_data: the test split's, else the
calibration images): what an int8 export costs in accuracy, recorded in detres_export.json. Evaluated by
detres.evaluation (COCO metrics, as tools/test_det.py does), with the boxes mapped back to the original image's
pixels by the same `to_original` as every inference loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor

from detres.data.transforms import to_original
from detres.deploy.quantize import CalibrationTruth
from detres.evaluation.evaluate import evaluate_records

Detector = Callable[[list[Tensor]], list[dict[str, Tensor]]]
KEYS = {"coco/AP50": "map50", "coco/AP": "map"}  # mAP@.5 and mAP@[.5,.95], in percent
# the accuracy an int8 model may lose against fp32 and still be the default (issue 25's bound), in mAP points
BOUND = {"map50": 0.5, "map": 1.0}


def worst_loss(fp32: dict[str, float], int8: dict[str, float]) -> float:
    """The larger of the two mAP losses, each as a share of its BOUND: at most 1 keeps the bound. A loss that
    cannot be computed (NaN: a subset of images without any scored class) counts as none."""
    shares = [(fp32[key] - int8[key]) / bound for key, bound in BOUND.items()]
    return max(share if math.isfinite(share) else 0.0 for share in shares)


def kept_bound(accuracy: dict | None) -> bool | None:
    """Whether a recorded int8 accuracy ({"fp32": {...}, "int8": {...}}) lost no more than BOUND against fp32;
    None when nothing was measured (a calibration set without ground truth)."""
    if not accuracy:
        return None
    return all(accuracy["fp32"][key] - accuracy["int8"][key] <= bound for key, bound in BOUND.items())


def detect_all(detector: Detector, images: Sequence[Tensor], truth: CalibrationTruth) -> list[dict[str, Tensor]]:
    """`detector`'s detections of each image, in the original image's pixels (as every inference loop maps them)."""
    out = []
    for image, record, scale in zip(images, truth.records, truth.scales):
        meta = {"scale": scale, "orig_size": (record.height, record.width)}
        out.append(to_original(detector([image])[0], meta))
    return out


def score(detections: Sequence[dict[str, Tensor]], truth: CalibrationTruth) -> dict[str, float]:
    """{"map50", "map"} (percent) of per-image detections against the ground truth `truth` holds."""
    by_id = {record.image_id: found for record, found in zip(truth.records, detections)}
    metrics = evaluate_records(truth.records, truth.class_map, by_id, ["coco"])
    return {name: round(float(metrics[key]), 3) for key, name in KEYS.items()}


def measure_map(detector: Detector, images: Sequence[Tensor], truth: CalibrationTruth) -> dict[str, float]:
    """{"map50", "map"} (percent) of `detector` on the images whose ground truth `truth` holds."""
    return score(detect_all(detector, images, truth), truth)


def subset(truth: CalibrationTruth, indices: Sequence[int]) -> CalibrationTruth:
    """The ground truth of the images of the given indices."""
    return CalibrationTruth(records=[truth.records[i] for i in indices], scales=[truth.scales[i] for i in indices],
                            class_map=truth.class_map)
