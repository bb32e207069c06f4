"""Test the localization system on a CLS-LOC split and print the paper's Table 13 layout.

Rows: whole-image box, RPN 1-crop (center crop), RPN dense, RPN+RCNN dense. Classes are the ground truth
(LOC error on GT CLS) and, with --cls-ckpt (a classification checkpoint from tools/train_cls.py), the
classifier's top-5 (top-1/top-5 LOC error).

    python tools/test_loc.py --cfg configs/loc_demo.yaml --out runs/loc_demo/metrics.json
"""

from __future__ import annotations

import argparse

from detres.cli import run_main
from detres.config import load_config
from detres.evaluation.metrics_file import write_metrics
from detres.localization.build import rcnn_checkpoint_path
from detres.localization.evaluate import ROWS, evaluate_localization, format_table13


def main() -> int:
    parser = argparse.ArgumentParser(description="localization error (Table 13 layout)")
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=None,
                        help="rows to run (default: all; RPN+RCNN only when the R-CNN checkpoint exists)")
    parser.add_argument("--cls-ckpt", default=None, help="classification checkpoint for predicted classes "
                        "(default: loc.cls_ckpt; none: ground-truth classes only)")
    parser.add_argument("--max-images", type=int, default=0, help="test on the first N images only (0: all)")
    parser.add_argument("--out", default="", help="write the metrics JSON here")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    args = parser.parse_args()
    cfg = load_config(args.cfg, args.overrides)
    rows = args.rows or [r for r in ROWS if r != "rpn_rcnn_dense" or rcnn_checkpoint_path(cfg).is_file()]
    cls_ckpt = cfg.loc.cls_ckpt if args.cls_ckpt is None else args.cls_ckpt
    metrics, _ = evaluate_localization(cfg, rows=rows, cls_ckpt=cls_ckpt, max_images=args.max_images)
    depth = "R" if cfg.model.backbone.plain else "ResNet"
    print(format_table13(metrics, rows, loc_network=f"{depth}-{cfg.model.backbone.depth}",
                         cls_network="ResNet (--cls-ckpt)" if cls_ckpt else ""))
    if args.out:
        write_metrics(metrics, args.out)
        print(f"metrics written to {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
