"""Detect objects in every image under a folder; write drawn images and one json of all detections.

    python tools/infer.py --cfg configs/demo.yaml --ckpt runs/demo/model_final.pth --input photos/ --output preds/
    torchrun --nproc_per_node=4 tools/infer.py ... --resume     # sharded across 4 processes, resumable

The loop lives in detres.engine.folder_inference (see docs/inference.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from detres.cli import run_main
from detres.config import load_config
from detres.distributed import cleanup, init_distributed, resolve_device
from detres.engine.folder_inference import infer_folder
from detres.engine.infer_journal import path_digest
from detres.engine.predictor import build_predictor
from detres.io.folders import EXTENSIONS, check_folders, find_images, output_names, write_file_atomic  # noqa: F401

log = logging.getLogger("detres.infer")


def main() -> int:
    parser = argparse.ArgumentParser(description="Run a trained detector over a folder of images.")
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--ckpt", default="", help="detection checkpoint, e.g. runs/demo/model_final.pth (or --model)")
    parser.add_argument("--model", default=None, help="a tools/export.py folder run with test.backend=onnxruntime|"
                        "openvino (or torch for a .pt2), e.g. runs/demo/export; default: none, use --ckpt")
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--score-thr", type=float, default=0.5, help="draw and report detections above this score")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes that read and resize images while the model runs; 0 reads them in this "
                             "process (default: the config's data.num_workers; example: --workers 4)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a stopped run in the same --output from its journal, skipping the images "
                             "it finished (default: off; an --output holding a journal is refused without it)")
    parser.add_argument("--no-draw", action="store_true",
                        help="write only detections.json, no drawn images (default: draw every image)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    check_folders(args.input, args.output)
    cfg = load_config(args.cfg, args.overrides)
    workers = cfg.data.num_workers if args.workers is None else args.workers
    if workers < 0:
        parser.error(f"--workers must be 0 or more, got {workers}")
    device = resolve_device(cfg.device)
    init_distributed(device)
    try:
        model = build_predictor(cfg, ckpts=[args.ckpt] if args.ckpt else [], model_dir=args.model, device=device)
        report = infer_folder(model, model.class_map, cfg, device, args.input, args.output, args.score_thr,
                              workers=workers, resume=args.resume, draw=not args.no_draw,
                              model_sha256=path_digest(args.ckpt or args.model))
    finally:
        cleanup()
    if report is None:  # another rank of a torchrun job: rank 0 reports
        return 0
    memory = report["memory"]
    growth = "" if memory["growth_percent"] is None else (
        f"{memory['baseline_rss_mib']} MiB after {memory['baseline_step']} images, {memory['final_rss_mib']} MiB "
        f"after {memory['final_step']} images ({memory['growth_percent']:+.1f}%), ")
    print(f"{len(report['detections'])} images in {report['seconds']:.1f}s ({report['images_per_second']:.2f} "
          f"images/s, {report['ranks']} process(es), {workers} reader worker(s) each; {report['resumed_images']} "
          f"done by an earlier run), {len(report['failed'])} unreadable skipped; memory {growth}peak "
          f"{memory['peak_rss_mib']} MiB; results in {args.output}")
    return 0


if __name__ == "__main__":
    run_main(main)
