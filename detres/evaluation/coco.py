"""COCO metrics through pycocotools' COCOeval, on COCO json ground truth or on records of any format."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detres.data.records import ClassMap, DetRecord
from detres.errors import ConfigError

COCO_BACKENDS = ("pycocotools", "faster_coco_eval")
STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def category_ids(class_map: ClassMap) -> list[int]:
    """The dataset's own integer category ids, or 1..C when its ids are names (VOC-style sets)."""
    if all(isinstance(i, int) and not isinstance(i, bool) for i in class_map.dataset_ids):
        return list(class_map.dataset_ids)
    return list(range(1, len(class_map) + 1))


def detections_to_coco_results(detections: dict[int, dict], class_map: ClassMap) -> list[dict]:
    """{image_id: dict(boxes XYXY, scores, labels 1..C)} -> COCO results list (xywh, dataset category ids).

    Values keep their full precision: a results file must give back the metrics of the detections it was written
    from (tools/eval_det.py), and scores rounded to a few decimals tie detections that were ranked apart.
    """
    cat_of = category_ids(class_map)
    results = []
    for image_id, det in detections.items():
        boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)  # float32 -> float64 and x2 - x1: both exact
        for (x1, y1, x2, y2), score, label in zip(boxes, det["scores"], det["labels"]):
            results.append({"image_id": int(image_id), "category_id": cat_of[int(label) - 1],
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": float(score)})
    return results


def coco_from_records(records: list[DetRecord], class_map: ClassMap) -> COCO:
    """An in-memory COCO ground truth; ignore flags become iscrowd=1 (COCOeval's only way to ignore a gt)."""
    cat_of = category_ids(class_map)
    annotations = []
    for rec in records:
        for box, label, ignore in zip(rec.boxes, rec.labels, rec.ignore):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append({"id": len(annotations) + 1, "image_id": rec.image_id,
                                "category_id": cat_of[int(label) - 1], "bbox": [float(box[0]), float(box[1]), w, h],
                                "area": w * h, "iscrowd": int(ignore)})
    gt = COCO()
    gt.dataset = {"images": [{"id": r.image_id, "width": r.width, "height": r.height} for r in records],
                  "annotations": annotations,
                  "categories": [{"id": i, "name": n} for i, n in zip(cat_of, class_map.names)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def check_coco_backend(backend: str) -> None:
    """ConfigError for a test.coco_backend that is not known or whose package is missing: what evaluate_coco would
    raise at the end, said before a long run starts."""
    if backend not in COCO_BACKENDS:
        raise ConfigError(f"test.coco_backend={backend!r} is not known; choose from {', '.join(COCO_BACKENDS)}")
    if backend == "faster_coco_eval":
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError:
            raise ConfigError("test.coco_backend=faster_coco_eval needs its package: "
                              "pip install faster-coco-eval") from None


def evaluate_coco(gt: COCO, results: list[dict], *, backend: str = "pycocotools") -> dict[str, float]:
    """COCOeval bbox stats as coco/<name> in percent (all zero when there is no detection at all).

    backend: pycocotools (the reference) or faster_coco_eval (its C++ reimplementation, same 12 stats, faster).
    """
    check_coco_backend(backend)
    if not results:
        return {f"coco/{name}": 0.0 for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "faster_coco_eval":
            stats = _faster_coco_eval_stats(gt, results)
        else:
            dt = gt.loadRes(results)
            evaluator = COCOeval(gt, dt, iouType="bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            stats = evaluator.stats
    # COCOeval reports -1 where a size range has no ground truth: NaN says "not measured", not "zero"
    return {f"coco/{name}": 100.0 * float(v) if v >= 0 else float("nan") for name, v in zip(STAT_NAMES, stats)}


def _faster_coco_eval_stats(gt: COCO, results: list[dict]) -> np.ndarray:
    """The 12 bbox stats from faster-coco-eval, on a copy of pycocotools' ground truth dataset."""
    try:
        import faster_coco_eval
    except ImportError:
        raise ConfigError("test.coco_backend=faster_coco_eval needs its package: "
                          "pip install faster-coco-eval") from None
    fast_gt = faster_coco_eval.COCO(gt.dataset)
    evaluator = faster_coco_eval.COCOeval_faster(fast_gt, fast_gt.loadRes(results), iouType="bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return np.asarray(evaluator.stats[:12])
