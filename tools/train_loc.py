"""Train the ImageNet localization system of App. C: `--stage rpn` (per-class RPN on random crops), then
`--stage rcnn` (RoI-centric R-CNN on the RPN's class-dependent proposals). Runs live in <output.dir>/{rpn,rcnn}.

    python tools/train_loc.py --cfg configs/loc_demo.yaml --stage rpn
    python tools/train_loc.py --cfg configs/loc_demo.yaml --stage rcnn
"""

from __future__ import annotations

import time

import torch

from detres.cli import add_overrides, run_main, tool_parser
from detres.config import load_config
from detres.data.demo_data import ensure_split_data
from detres.distributed import cleanup, is_main_process
from detres.engine.loc_trainer import train_rcnn, train_rpn


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--cfg", required=True, metavar="YAML", help="YAML config file, e.g. configs/loc_demo.yaml")
    parser.add_argument("--stage", required=True, choices=["rpn", "rcnn"],
                        help="rpn: the per-class RPN; rcnn: the R-CNN on the RPN's proposals (train rpn first)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the stage's run from its last checkpoint (default: a new run)")
    add_overrides(parser)
    args = parser.parse_args()
    cfg = load_config(args.cfg, args.overrides)
    ensure_split_data(cfg.data, cfg.data.train, seed=cfg.seed)  # demo only: the synthetic set is written on first use
    torch.manual_seed(cfg.seed)
    tic = time.time()
    final = (train_rpn if args.stage == "rpn" else train_rcnn)(cfg, resume=args.resume)
    if is_main_process():
        print(f"[{args.stage}] done in {time.time() - tic:.0f}s: {final}")
    cleanup()
    return 0


if __name__ == "__main__":
    run_main(main)
