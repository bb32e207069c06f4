"""Test a classifier: centre crop, 10-crop or fully-convolutional multi-scale; top-1/top-5 error.

    python tools/test_cls.py --cfg configs/cls_demo.yaml --ckpt runs/cls_demo/model_final.pth --mode tencrop
"""

from __future__ import annotations

import argparse

from tqdm import tqdm

from detres.cli import run_main
from detres.config import load_config
from detres.data.classification import build_cls_dataset
from detres.distributed import resolve_device
from detres.errors import CheckpointError
from detres.evaluation.classification import CLS_MODES, evaluate_classifier, transform_for_mode
from detres.evaluation.metrics_file import format_metrics, write_metrics
from detres.io.checkpoint import load_checkpoint
from detres.modeling.resnet import build_resnet


def main() -> int:
    parser = argparse.ArgumentParser(description="Test a ResNet classifier.")
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--ckpt", required=True, help="classification checkpoint (tools/train_cls.py)")
    parser.add_argument("--mode", choices=CLS_MODES, help="default: test.cls_mode of the config")
    parser.add_argument("--out", help="metrics json to write")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(args.cfg, args.overrides)
    mode = args.mode or cfg.test.cls_mode
    mean, std = cfg.model.backbone.pixel_mean, cfg.model.backbone.pixel_std
    dataset = build_cls_dataset(cfg.data.test, input_cfg=cfg.data.input, pixel_mean=mean, pixel_std=std,
                                train=False, transform=transform_for_mode(mode, cfg.data.input, mean, std))
    state = load_checkpoint(args.ckpt)
    if "model" not in state:
        raise CheckpointError(f"{args.ckpt} is not a detres classification checkpoint (no 'model' entry)")
    model = build_resnet(cfg.model.backbone, num_classes=state["model"]["fc.weight"].shape[0])
    model.load_state_dict(state["model"])
    model.to(resolve_device(cfg.device)).eval()
    metrics = evaluate_classifier(model, dataset, mode=mode, crop_size=cfg.data.input.crop_size,
                                  scales=cfg.test.cls_scales, progress=lambda it: tqdm(it, desc=mode))
    print(format_metrics(metrics))
    if args.out:
        write_metrics(metrics, args.out)
    return 0


if __name__ == "__main__":
    run_main(main)
