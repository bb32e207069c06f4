"""Train a Faster R-CNN C4 detector.

    python tools/train_det.py --cfg configs/coco_r101.yaml [--resume] [KEY=VALUE ...]
    torchrun --nproc_per_node=N tools/train_det.py --cfg configs/coco_r101.yaml
    python tools/train_det.py --cfg configs/demo_stepwise.yaml   # solver.mode=stepwise: the paper's 4-step recipe
"""

from __future__ import annotations

import logging

from detres.cli import add_overrides, add_progress, run_main, tool_parser
from detres.config import load_config
from detres.engine.train import train_detector
from detres.evaluation.metrics_file import format_metrics


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--cfg", required=True, metavar="YAML", help="YAML config file, e.g. configs/demo.yaml")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in output.dir from its last checkpoint (default: a new run; an "
                             "existing run folder is refused)")
    add_overrides(parser)
    add_progress(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    metrics = train_detector(load_config(args.cfg, args.overrides), resume=args.resume)
    if metrics:
        print(format_metrics(metrics))
    return 0


if __name__ == "__main__":
    run_main(main)
