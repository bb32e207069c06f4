"""Images/s of tools/infer.py's folder loop with 0, 4, ... reader workers (run on a quiet machine).

    python tools/bench_infer.py --cfg configs/demo.yaml --ckpt runs/demo/model_final.pth \
        --input datasets/shapes/coco/val --workers 0,4 --out runs/bench_infer.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from detres.cli import add_overrides, run_main, tool_parser
from detres.config import load_config
from detres.distributed import resolve_device
from detres.engine.loading import load_detector
from detres.io.folders import write_file_atomic
from detres.perf.folder_bench import bench_folder_workers


def _counts(text: str) -> list[int]:
    try:
        counts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated worker counts like 0,4, got {text!r}") from None
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError(f"expected worker counts of 0 or more like 0,4, got {text!r}")
    return counts


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--cfg", required=True, help="config file, for example configs/demo.yaml")
    parser.add_argument("--ckpt", required=True, help="detection checkpoint, for example runs/demo/model_final.pth")
    parser.add_argument("--input", required=True, type=Path,
                        help="folder of images, for example datasets/shapes/coco/val")
    parser.add_argument("--workers", type=_counts, default=[0, 4],
                        help="comma-separated reader-worker counts to time (default: 0,4; example: 0,2,4)")
    parser.add_argument("--limit", type=int, default=0,
                        help="time only the first N images of the folder (default: 0 = all; example: 200)")
    parser.add_argument("--no-draw", action="store_true",
                        help="time without drawing and writing the JPEGs (default: draw, as tools/infer.py does)")
    parser.add_argument("--score-thr", type=float, default=0.5,
                        help="detections kept and drawn at or above this score (default: 0.5, as tools/infer.py)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the rows as json here (default: print only; example: runs/bench_infer.json)")
    add_overrides(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cfg = load_config(args.cfg, args.overrides)
    device = resolve_device(cfg.device)
    model, class_map, _ = load_detector(args.ckpt, cfg, optimize=True)
    model.to(device)
    rows = bench_folder_workers(model, class_map, cfg, device, input_dir=args.input, workers=args.workers,
                                limit=args.limit, draw=not args.no_draw, score_thr=args.score_thr)
    print("| workers | images | seconds | images/s |\n| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['workers']} | {row['images']} | {row['seconds']:.2f} | {row['images_per_second']:.2f} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(args.out, json.dumps({"device": str(device), "rows": rows}, indent=1).encode())
    return 0


if __name__ == "__main__":
    run_main(main)
