"""Evaluate trained detectors on the test split; several --ckpt form an ensemble (App. B).

    python tools/test_det.py --cfg configs/coco_r101.yaml --ckpt runs/coco_r101/model_final.pth --out m.json
    python tools/test_det.py --cfg configs/demo.yaml --ckpt A.pth --ckpt B.pth test.box_refine=true
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from detres.cli import run_main
from detres.config import load_config
from detres.data.detection import build_detection_dataset
from detres.distributed import resolve_device
from detres.engine.inference import run_inference
from detres.engine.loading import load_detector
from detres.engine.tiled_inference import run_tiled_inference
from detres.engine.trainer import eval_loader
from detres.evaluation.coco import detections_to_coco_results
from detres.evaluation.evaluate import default_metrics, evaluate_detections
from detres.evaluation.metrics_file import format_metrics, write_metrics
from detres.evaluation.voc import paper_table_row
from detres.modeling.detector import Detector, inference_options
from detres.modeling.fast_inference import autocast_dtype


def main() -> int:
    parser = argparse.ArgumentParser(description="Evaluate detectors on the test split of the config.")
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--ckpt", action="append", required=True, help="checkpoint; repeat for an ensemble")
    parser.add_argument("--out", help="metrics json (detections go next to it as *_detections.json)")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE, e.g. test.box_refine=true test.multiscale=true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(args.cfg, args.overrides)
    device = resolve_device(cfg.device)
    models = [load_detector(path, cfg, optimize=True)[0].to(device) for path in args.ckpt]
    dataset = build_detection_dataset(cfg.data.test, input_cfg=cfg.data.input, pixel_mean=cfg.model.backbone.pixel_mean,
                                      pixel_std=cfg.model.backbone.pixel_std, train=False)
    detector = Detector(models, inference_options(cfg))
    if cfg.test.tile_size:  # large images: tiles at the training scale, merged (docs/own_data.md)
        detections = run_tiled_inference(detector, dataset, cfg, device)
    else:
        detections = run_inference(detector, eval_loader(cfg, dataset), device=device,
                                   autocast_dtype=autocast_dtype(cfg.test.precision, device))
    metrics = evaluate_detections(dataset, detections, cfg.test.eval_metrics or default_metrics(cfg.data.test.format),
                                  cfg.data.test.ann_file if cfg.data.test.format == "coco" else None)
    print(format_metrics(metrics))
    if "voc07/mAP" in metrics:
        print(paper_table_row(metrics, dataset.class_map.names))
    if args.out:
        out = write_metrics(metrics, args.out)
        results = detections_to_coco_results(detections, dataset.class_map)
        dets_path = out.with_name(out.stem + "_detections.json")
        tmp = dets_path.with_name("." + dets_path.name + ".tmp")
        tmp.write_text(json.dumps(results))
        tmp.replace(dets_path)
        print(f"wrote {out} and {Path(dets_path)}")
    return 0


if __name__ == "__main__":
    run_main(main)
