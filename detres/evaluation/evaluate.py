"""One entry point for every detection metric, on any dataset and any detections."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from pycocotools.coco import COCO

from detres.data.formats import FORMATS
from detres.data.records import ClassMap, DetRecord
from detres.errors import ConfigError
from detres.evaluation.coco import coco_from_records, detections_to_coco_results, evaluate_coco
from detres.evaluation.imagenet_det import evaluate_imagenet_det
from detres.evaluation.voc import evaluate_voc

METRICS = ("coco", "voc07", "voc", "imagenet_det")


def default_metrics(dataset_format: str) -> list[str]:
    """The metrics of a dataset format when test.eval_metrics is empty (detres.data.formats)."""
    entry = FORMATS.get(dataset_format)
    return list(entry.default_metrics) if entry else ["coco"]


def evaluate_records(records: list[DetRecord], class_map: ClassMap, detections: dict[int, dict],
                     metrics: list[str], coco_gt_file: str | None = None, *,
                     coco_backend: str = "pycocotools") -> dict[str, float]:
    """Flat metrics dict (percent). detections: {image_id: dict(boxes XYXY original pixels, scores, labels)};
    images without an entry count as having no detection. COCO metrics use the original json when given
    (its 'area' fields decide small/medium/large exactly as a direct pycocotools run).
    coco_backend: pycocotools | faster_coco_eval (test.coco_backend)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    out: dict[str, float] = {}
    for metric in metrics:
        if metric == "coco":
            if coco_gt_file:
                with contextlib.redirect_stdout(io.StringIO()):
                    gt = COCO(str(Path(coco_gt_file)))
            else:
                gt = coco_from_records(records, class_map)
            out.update(evaluate_coco(gt, detections_to_coco_results(detections, class_map), backend=coco_backend))
        elif metric in ("voc07", "voc"):
            out.update(evaluate_voc(records, detections, class_map.names, use_07=metric == "voc07"))
        else:
            out.update(evaluate_imagenet_det(records, detections, class_map.names))
    return out


def evaluate_detections(dataset, detections: dict[int, dict], metrics: list[str],
                        coco_gt_file: str | None = None, *, coco_backend: str = "pycocotools") -> dict[str, float]:
    """`evaluate_records` on a DetectionDataset."""
    return evaluate_records(dataset.records, dataset.class_map, detections, metrics, coco_gt_file,
                            coco_backend=coco_backend)
