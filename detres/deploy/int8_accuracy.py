"""fp32 and int8 mAP of an export on its calibration images, when they have ground truth: what an int8 export
costs in accuracy, recorded in detres_export.json. Evaluated by detres.evaluation (COCO metrics, as
tools/test_det.py does), with the boxes mapped back to the original image's pixels by the same `to_original` as
every inference loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from detres.data.transforms import to_original
from detres.deploy.quantize import CalibrationTruth
from detres.evaluation.evaluate import evaluate_records

Detector = Callable[[list[Tensor]], list[dict[str, Tensor]]]
KEYS = {"coco/AP50": "map50", "coco/AP": "map"}  # mAP@.5 and mAP@[.5,.95], in percent
# the accuracy an int8 model may lose against fp32 and still be the default (issue 25's bound), in mAP points
BOUND = {"map50": 0.5, "map": 1.0}


def kept_bound(accuracy: dict | None) -> bool | None:
    """Whether a recorded int8 accuracy ({"fp32": {...}, "int8": {...}}) lost no more than BOUND against fp32;
    None when nothing was measured (a calibration set without ground truth)."""
    if not accuracy:
        return None
    return all(accuracy["fp32"][key] - accuracy["int8"][key] <= bound for key, bound in BOUND.items())


def measure_map(detector: Detector, images: Sequence[Tensor], truth: CalibrationTruth) -> dict[str, float]:
    """{"map50", "map"} (percent) of `detector` on the images whose ground truth `truth` holds."""
    detections = {}
    for image, record, scale in zip(images, truth.records, truth.scales):
        meta = {"scale": scale, "orig_size": (record.height, record.width)}
        detections[record.image_id] = to_original(detector([image])[0], meta)
    metrics = evaluate_records(truth.records, truth.class_map, detections, ["coco"])
    return {name: round(float(metrics[key]), 3) for key, name in KEYS.items()}
