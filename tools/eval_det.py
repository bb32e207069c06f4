"""Evaluate any detections (a COCO-format results file) against COCO json or VOC ground truth.

    python tools/eval_det.py --gt annotations/instances_val2017.json --results dets.json --metric coco
    python tools/eval_det.py --gt datasets/VOCdevkit --split 2007:test --results dets.json --metric voc07
    python tools/eval_det.py --gt annotations/instances_val2017.json --results dets.json --metric coco \
        --coco-backend faster_coco_eval
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detres.cli import run_main, tool_parser
from detres.data.coco import read_coco
from detres.data.records import ClassMap
from detres.data.voc import read_voc
from detres.errors import DataError
from detres.evaluation.coco import COCO_BACKENDS, category_ids
from detres.evaluation.evaluate import METRICS, evaluate_records
from detres.evaluation.metrics_file import format_metrics, write_metrics


def load_results(path: Path, class_map: ClassMap, image_ids: set[int]) -> dict[int, dict]:
    """COCO results list -> {image_id: dict(boxes XYXY, scores, labels 1..C)}; bad entries are named."""
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read results file {path}: {exc}") from None
    if not isinstance(results, list):
        raise DataError(f"{path}: a COCO results file is a list of {{image_id, category_id, bbox, score}}")
    label_of = {cat: i + 1 for i, cat in enumerate(category_ids(class_map))}
    grouped: dict[int, list] = {}
    for i, r in enumerate(results):
        try:
            image_id, label = int(r["image_id"]), label_of[r["category_id"]]
            x, y, w, h = (float(v) for v in r["bbox"])
            score = float(r["score"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: entry {i} is not a valid detection ({exc!r})") from None
        if image_id not in image_ids:
            raise DataError(f"{path}: entry {i} has image_id {image_id}, which the ground truth does not contain")
        grouped.setdefault(image_id, []).append((x, y, x + w, y + h, score, label))
    return {k: {"boxes": np.array([v[:4] for v in rows], np.float32), "scores": np.array([v[4] for v in rows]),
                "labels": np.array([v[5] for v in rows], np.int64)} for k, rows in grouped.items()}


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--gt", required=True, type=Path, metavar="PATH",
                        help="ground truth: a COCO json (e.g. datasets/shapes/coco/annotations/instances_val.json) "
                             "or a VOCdevkit folder (e.g. datasets/VOCdevkit)")
    parser.add_argument("--split", default="2007:test", metavar="YEAR:SPLIT",
                        help="the image set of VOC ground truth, e.g. 2012:val (ignored for COCO json)")
    parser.add_argument("--results", required=True, type=Path, metavar="JSON",
                        help="COCO results list [{image_id, category_id, bbox [x,y,w,h], score}], e.g. the "
                             "*_detections.json of tools/test_det.py or detections_coco.json of infer --format coco")
    parser.add_argument("--metric", choices=METRICS, action="append", required=True,
                        help=f"metric family, one of {', '.join(METRICS)}; repeat for several, "
                             "e.g. --metric coco --metric voc07")
    parser.add_argument("--coco-backend", choices=COCO_BACKENDS, default="pycocotools",
                        help="what computes --metric coco: pycocotools (the reference) or faster_coco_eval (its C++ "
                             "reimplementation, the same 12 stats, faster on large sets); default pycocotools, e.g. "
                             "--coco-backend faster_coco_eval (test.coco_backend of the other tools)")
    parser.add_argument("--out", type=Path, metavar="JSON",
                        help="write the flat metrics JSON here, e.g. metrics.json (default: print only)")
    args = parser.parse_args()
    if args.gt.is_dir():
        records, class_map = read_voc(args.gt, [args.split])
        coco_file = None
    else:
        records, class_map = read_coco(args.gt, args.gt.parent)
        coco_file = str(args.gt)
    detections = load_results(args.results, class_map, {r.image_id for r in records})
    metrics = evaluate_records(records, class_map, detections, args.metric, coco_file, coco_backend=args.coco_backend)
    print(format_metrics(metrics))
    if args.out:
        write_metrics(metrics, args.out)
    return 0


if __name__ == "__main__":
    run_main(main)
