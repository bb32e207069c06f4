"""Recompute BN statistics of a classification checkpoint on training batches (App. A), before detection.

    python tools/recompute_bn.py --cfg configs/imagenet_r101.yaml --ckpt model_final.pth --out r101_bn.pth
"""

from __future__ import annotations

import logging

import torch

from detres.cli import add_overrides, run_main, tool_parser
from detres.cli.ckpt_config import add_cfg_from_ckpt, config_for_checkpoint
from detres.data.classification import build_cls_dataset
from detres.data.loader import CheckedLoader
from detres.io.checkpoint import load_checkpoint, save_checkpoint
from detres.modeling.batchnorm import recompute_bn_stats
from detres.modeling.resnet import build_resnet


def main() -> int:
    parser = tool_parser(__doc__)
    add_cfg_from_ckpt(parser)
    parser.add_argument("--ckpt", required=True, metavar="PTH",
                        help="classification checkpoint (tools/train_cls.py) or a ResNet state dict (then give "
                             "--cfg), e.g. runs/imagenet_r101/model_final.pth")
    parser.add_argument("--out", required=True, metavar="PTH",
                        help="where to write the state dict with new statistics, e.g. r101_bn.pth")
    parser.add_argument("--batches", type=int, default=100, metavar="N",
                        help="number of training batches to average over")
    add_overrides(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_for_checkpoint(args.cfg, args.ckpt, args.overrides)
    state = load_checkpoint(args.ckpt)
    weights = state.get("model", state)
    model = build_resnet(cfg.model.backbone, num_classes=weights["fc.weight"].shape[0])
    model.load_state_dict(weights)
    dataset = build_cls_dataset(cfg.data.train, input_cfg=cfg.data.input, pixel_mean=cfg.model.backbone.pixel_mean,
                                pixel_std=cfg.model.backbone.pixel_std, train=True)
    loader = CheckedLoader(dataset, batch_size=cfg.solver.ims_per_batch, shuffle=True, num_workers=cfg.data.num_workers,
                           generator=torch.Generator().manual_seed(cfg.seed), timeout=cfg.data.loader_timeout)
    recompute_bn_stats(model, (images for images, _ in loader), args.batches)
    save_checkpoint({"model": model.state_dict(), "class_names": dataset.class_names}, args.out)
    print(f"wrote {args.out} (BN statistics over {min(args.batches, len(loader))} batches)")
    return 0


if __name__ == "__main__":
    run_main(main)
