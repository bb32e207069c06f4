"""Recompute BN statistics of a classification checkpoint on training batches (App. A), before detection.

    python tools/recompute_bn.py --cfg configs/imagenet_r101.yaml --ckpt model_final.pth --out r101_bn.pth
"""

from __future__ import annotations

import argparse

import torch

from detres.cli import run_main
from detres.config import load_config
from detres.data.classification import build_cls_dataset
from detres.data.loader import CheckedLoader
from detres.io.checkpoint import load_checkpoint, save_checkpoint
from detres.modeling.batchnorm import recompute_bn_stats
from detres.modeling.resnet import build_resnet


def main() -> int:
    parser = argparse.ArgumentParser(description="Recompute BN population statistics on training batches.")
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True, help="where to write the state dict with new statistics")
    parser.add_argument("--batches", type=int, default=100, help="number of training batches to average over")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(args.cfg, args.overrides)
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
