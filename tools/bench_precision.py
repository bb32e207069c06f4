"""Issue 25's precision table for a trained checkpoint: mAP@.5 and mAP@[.5,.95] on its val split of eager fp32,
eager bf16, OpenVINO fp32 / int8 (NNCF) / bf16 and ONNX Runtime int8 (quantize_static), then batch-1 and folder
img/s of each against the peer (torchvision's FasterRCNN with the same weights) in the same run, and where the
time goes in OpenVINO (its per-layer counters) for detres int8, detres fp32 and the peer.

    python tools/bench_precision.py --ckpt runs/demo/model_final.pth --out runs/demo/precision.json
    python tools/bench_precision.py --cfg configs/coco_r50.yaml --ckpt R50.pth --size 600x800 --calib 64 \\
        data.test.ann_file=VAL.json
"""

from __future__ import annotations

import json
import logging

from detres.cli import add_overrides, run_main, tool_parser
from detres.cli.ckpt_config import add_cfg_from_ckpt, config_for_checkpoint
from detres.errors import UserError
from detres.io.atomic import write_atomic
from detres.perf.precision_table import format_precision_table, precision_table


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size {text!r}: expected HxW, e.g. 600x800") from None
    return height, width


def main() -> int:
    parser = tool_parser(__doc__)
    add_cfg_from_ckpt(parser)
    parser.add_argument("--ckpt", required=True, help="trained detection checkpoint, e.g. runs/demo/model_final.pth")
    parser.add_argument("--calib", type=int, default=None, metavar="N",
                        help="training images that calibrate both int8 models; default deploy.calib_images (64)")
    parser.add_argument("--size", default="600x800", metavar="HxW",
                        help="image size of the speed rows (synthetic images), default 600x800 as tools/bench.py")
    parser.add_argument("--folder-images", type=int, default=8, metavar="N",
                        help="same-size images of the folder rows, run in one call (default 8)")
    parser.add_argument("--runs", type=int, default=3, metavar="N", help="timed rounds, median reported (default 3)")
    parser.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed rounds first (default 1)")
    parser.add_argument("--out", default="", metavar="JSON", help="also write the whole result here (default: print)")
    add_overrides(parser, help="config overrides KEY=VALUE, e.g. data.test.ann_file=VAL.json deploy.threads=2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.folder_images < 1 or args.runs < 1 or args.warmup < 0:
        raise UserError("--folder-images and --runs must be at least 1, --warmup at least 0")
    cfg = config_for_checkpoint(args.cfg, args.ckpt, args.overrides)
    height, width = _size(args.size)
    result = precision_table(args.ckpt, cfg, calib=cfg.deploy.calib_images if args.calib is None else args.calib,
                             height=height, width=width, folder_images=args.folder_images, runs=args.runs,
                             warmup=args.warmup)
    print(format_precision_table(result))
    if args.out:
        write_atomic(args.out, json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
