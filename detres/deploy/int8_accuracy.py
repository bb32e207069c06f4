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


def measure_map(detector: Detector, images: Sequence[Tensor], truth: CalibrationTruth) -> dict[str, float]:
    """{"map50", "map"} (percent) of `detector` on the images whose ground truth `truth` holds."""
    detections = {}
    for image, record, scale in zip(images, truth.records, truth.scales):
        meta = {"scale": scale, "orig_size": (record.height, record.width)}
        detections[record.image_id] = to_original(detector([image])[0], meta)
    metrics = evaluate_records(truth.records, truth.class_map, detections, ["coco"])
    return {name: round(float(metrics[key]), 3) for key, name in KEYS.items()}
