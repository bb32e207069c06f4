"""fp32 and int8 mAP of an export on its calibration images, when they have ground truth: what an int8 export
costs in accuracy, recorded in detres_export.json. Evaluated by detres.evaluation (COCO metrics, as
tools/test_det.py does); the boxes go back to the original image's pixels as detres.engine.inference.to_original
does (the engine layer sits above this one, so its helper cannot be imported here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from torch import Tensor

from detres.deploy.quantize import CalibrationTruth
from detres.evaluation.evaluate import evaluate_records

Detector = Callable[[list[Tensor]], list[dict[str, Tensor]]]
KEYS = {"coco/AP50": "map50", "coco/AP": "map"}  # mAP@.5 and mAP@[.5,.95], in percent


def _original(det: dict[str, Tensor], scale: tuple[float, float], height: int, width: int) -> dict[str, np.ndarray]:
    sy, sx = scale
    boxes = det["boxes"].float().numpy() / np.array([sx, sy, sx, sy], np.float32)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return {"boxes": boxes, "scores": det["scores"].float().numpy(), "labels": det["labels"].numpy()}


def measure_map(detector: Detector, images: Sequence[Tensor], truth: CalibrationTruth) -> dict[str, float]:
    """{"map50", "map"} (percent) of `detector` on the images whose ground truth `truth` holds."""
    detections = {}
    for image, record, scale in zip(images, truth.records, truth.scales):
        detections[record.image_id] = _original(detector([image])[0], scale, record.height, record.width)
    metrics = evaluate_records(truth.records, truth.class_map, detections, ["coco"])
    return {name: round(float(metrics[key]), 3) for key, name in KEYS.items()}
