"""Train a ResNet classifier (ImageNet folders, CIFAR-10 or the synthetic set).

    python tools/train_cls.py --cfg configs/cls_demo.yaml [--resume] [KEY=VALUE ...]
    torchrun --nproc_per_node=N tools/train_cls.py --cfg configs/imagenet_r50.yaml
"""

from __future__ import annotations

import logging

from detres.cli import add_overrides, add_progress, run_main, tool_parser
from detres.config import load_config
from detres.data.demo_data import ensure_split_data
from detres.engine.cls_trainer import train_classifier


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--cfg", required=True, metavar="YAML", help="YAML config file, e.g. configs/cls_demo.yaml")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in output.dir from its last checkpoint (default: a new run)")
    add_overrides(parser)
    add_progress(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(args.cfg, args.overrides)
    ensure_split_data(cfg.data, cfg.data.train, seed=cfg.seed)  # demo only: the synthetic set is written on first use
    metrics = train_classifier(cfg, resume=args.resume)
    print(f"top-1 error {metrics.get('cls/top1_err', float('nan')):.2f}%  "
          f"top-5 error {metrics.get('cls/top5_err', float('nan')):.2f}%  ({cfg.output.dir})")
    return 0


if __name__ == "__main__":
    run_main(main)
