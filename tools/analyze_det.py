"""Analyze detections (a COCO results file from any toolkit): an HTML report with per-class AP, PR curves, score
thresholds, error breakdowns, confusion matrix and the worst images, plus report.json.

    python tools/analyze_det.py --gt datasets/shapes/coco/annotations/instances_val.json \
        --image-dir datasets/shapes/coco/val --results runs/demo_metrics_detections.json --out runs/demo_analysis
    python tools/analyze_det.py --gt datasets/VOCdevkit --split 2007:test --results dets.json --out report/
"""

from __future__ import annotations

from pathlib import Path

from detres.analysis.inputs import read_ground_truth, read_results
from detres.analysis.report import analyze
from detres.cli import run_main, tool_parser


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--gt", required=True, type=Path,
                        help="ground truth: a COCO json (images beside it) or a VOCdevkit folder, "
                             "e.g. datasets/shapes/coco/annotations/instances_val.json")
    parser.add_argument("--image-dir", type=Path, default=None,
                        help="COCO ground truth only: the images' folder, for drawing the worst images (default: "
                             "the json's folder), e.g. datasets/shapes/coco/val")
    parser.add_argument("--split", default="2007:test", help="VOC ground truth only: YEAR:SPLIT (default 2007:test)")
    parser.add_argument("--results", required=True, type=Path,
                        help="COCO results file: a json list of {image_id, category_id, bbox [x,y,w,h], score}")
    parser.add_argument("--out", required=True, type=Path,
                        help="report folder to write (replaced if it holds a previous report), e.g. runs/report")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU threshold of the confusion matrix (default 0.5)")
    parser.add_argument("--score-thresh", type=float, default=None,
                        help="score threshold of the confusion matrix and worst images (default: the best-F1 "
                             "threshold over all classes), e.g. 0.3")
    parser.add_argument("--worst", type=int, default=8, help="how many worst images to draw (default 8)")
    args = parser.parse_args()
    records, class_map, coco_file = read_ground_truth(args.gt, args.split, args.image_dir)
    results = read_results(args.results, class_map, {r.image_id for r in records})
    rep = analyze(records, class_map, results, args.out, coco_gt_file=coco_file, iou_thresh=args.iou,
                  score_thresh=args.score_thresh, worst_k=args.worst, title=f"Evaluation of {args.results.name}")
    print(f"coco/AP {rep['coco/AP']:.2f}  coco/AP50 {rep['coco/AP50']:.2f}  best-F1 threshold "
          f"{rep['pr/all/best_f1_thresh']}")
    print(f"wrote {args.out / 'index.html'} and {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    run_main(main)
