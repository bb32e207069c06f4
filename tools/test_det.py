"""Evaluate trained detectors on the test split; several --ckpt form an ensemble (App. B).

    python tools/test_det.py --cfg configs/coco_r101.yaml --ckpt runs/coco_r101/model_final.pth --out m.json
    python tools/test_det.py --cfg configs/demo.yaml --ckpt A.pth --ckpt B.pth test.box_refine=true
    detres test --ckpt runs/demo/model_final.pth test.box_refine=true    # the config stored in the checkpoint
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from detres.analysis.report import analyze
from detres.cli import add_overrides, add_progress, run_main, tool_parser
from detres.cli.ckpt_config import CFG_HELP
from detres.data.detection import build_split
from detres.data.formats import coco_gt_file
from detres.distributed import resolve_device
from detres.engine.inference import run_inference
from detres.engine.predictor import build_predictor, config_for_predictor
from detres.engine.tiled_inference import run_tiled_inference
from detres.engine.trainer import eval_loader
from detres.evaluation.coco import detections_to_coco_results
from detres.evaluation.evaluate import default_metrics, evaluate_detections
from detres.evaluation.metrics_file import format_metrics, write_metrics
from detres.evaluation.voc import paper_table_row
from detres.io.atomic import write_atomic
from detres.modeling.fast_inference import autocast_dtype


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--cfg", default=None, metavar="YAML",
                        help=CFG_HELP + "; with --model, the config stored in the export folder")
    parser.add_argument("--ckpt", action="append", default=[], metavar="PTH",
                        help="detection checkpoint, e.g. runs/demo/model_final.pth; repeat for an ensemble (the "
                             "first one's config is used when --cfg is not given; default: none, give --model)")
    parser.add_argument("--model", default=None, metavar="DIR",
                        help="a tools/export.py folder, run with test.backend=onnxruntime|openvino, e.g. "
                             "runs/demo_export (default: none, use --ckpt)")
    parser.add_argument("--out", metavar="JSON",
                        help="metrics json, e.g. runs/demo/metrics.json; the detections go next to it as "
                             "<name>_detections.json, a COCO results list (default: print only)")
    parser.add_argument("--report", metavar="DIR",
                        help="also write the analysis report (index.html, report.json) to this folder, "
                             "e.g. runs/demo_report (default: none)")
    add_overrides(parser, help="config overrides KEY=VALUE, anywhere among the options, e.g. test.box_refine=true "
                               "test.multiscale=true data.test.ann_file=other_val.json")
    add_progress(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = config_for_predictor(args.cfg, ckpts=args.ckpt, model_dir=args.model, overrides=args.overrides)
    device = resolve_device(cfg.device)
    detector = build_predictor(cfg, ckpts=args.ckpt, model_dir=args.model, device=device)
    dataset = build_split(cfg.data, "test", pixel_mean=cfg.model.backbone.pixel_mean,
                          pixel_std=cfg.model.backbone.pixel_std, train=False, seed=cfg.seed)
    if cfg.test.tile_size:  # large images: tiles at the training scale, merged (docs/own_data.md)
        detections = run_tiled_inference(detector, dataset, cfg, device)
    else:
        detections = run_inference(detector, eval_loader(cfg, dataset), device=device,
                                   autocast_dtype=autocast_dtype(cfg.test.precision, device))
    metrics = evaluate_detections(dataset, detections, cfg.test.eval_metrics or default_metrics(cfg.data.test.format),
                                  coco_gt_file(cfg.data.test),
                                  coco_backend=cfg.test.coco_backend)
    print(format_metrics(metrics))
    if "voc07/mAP" in metrics:
        print(paper_table_row(metrics, dataset.class_map.names))
    if args.out:
        out = write_metrics(metrics, args.out)
        results = detections_to_coco_results(detections, dataset.class_map)
        dets_path = out.with_name(out.stem + "_detections.json")
        write_atomic(dets_path, json.dumps(results), fix="check --out")
        print(f"wrote {out} and {Path(dets_path)}")
    if args.report:
        analyze(dataset.records, dataset.class_map, detections_to_coco_results(detections, dataset.class_map),
                args.report, coco_gt_file=coco_gt_file(cfg.data.test),
                title=f"Evaluation of {', '.join(Path(c).name for c in args.ckpt) or args.model}")
        print(f"wrote the report {Path(args.report) / 'index.html'}")
    return 0


if __name__ == "__main__":
    run_main(main)
