"""Test the localization system on a CLS-LOC split and print the paper's Table 13 layout.

Rows: whole-image box, RPN 1-crop (center crop), RPN dense, RPN+RCNN dense. Classes are the ground truth
(LOC error on GT CLS) and, with --cls-ckpt (a classification checkpoint from tools/train_cls.py), the
classifier's top-5 (top-1/top-5 LOC error).

    python tools/test_loc.py --cfg configs/loc_demo.yaml --out runs/loc_demo/metrics.json
"""

from __future__ import annotations

from detres.cli import add_overrides, add_progress, run_main, tool_parser
from detres.config import load_config
from detres.evaluation.metrics_file import write_metrics
from detres.localization.build import rcnn_checkpoint_path
from detres.localization.evaluate import ROWS, evaluate_localization, format_table13


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--cfg", required=True, metavar="YAML", help="YAML config file, e.g. configs/loc_demo.yaml")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=None, metavar="ROW",
                        help=f"rows to run, of {', '.join(ROWS)}, e.g. --rows whole_image rpn_dense (default: all; "
                             "RPN+RCNN only when the R-CNN checkpoint exists)")
    parser.add_argument("--cls-ckpt", default=None, metavar="PTH",
                        help="classification checkpoint (tools/train_cls.py) for predicted classes, e.g. "
                             "runs/cls_demo/model_final.pth (default: loc.cls_ckpt of the config; empty: "
                             "ground-truth classes only)")
    parser.add_argument("--max-images", type=int, default=0, metavar="N",
                        help="test on the first N images only (default: 0, all)")
    parser.add_argument("--out", default="", metavar="JSON",
                        help="write the metrics JSON here, e.g. runs/loc_demo/metrics.json (default: print only)")
    add_overrides(parser)
    add_progress(parser)
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
