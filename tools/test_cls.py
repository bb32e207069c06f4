"""Test a classifier: centre crop, 10-crop or fully-convolutional multi-scale; top-1/top-5 error.

    python tools/test_cls.py --cfg configs/cls_demo.yaml --ckpt runs/cls_demo/model_final.pth --mode tencrop
"""

from __future__ import annotations

import logging

from detres.cli import add_overrides, add_progress, run_main, tool_parser
from detres.cli.ckpt_config import add_cfg_from_ckpt, config_for_checkpoint
from detres.cli.progress import progress
from detres.data.classification import build_cls_dataset
from detres.distributed import resolve_device
from detres.errors import CheckpointError
from detres.evaluation.classification import CLS_MODES, evaluate_classifier, transform_for_mode
from detres.evaluation.metrics_file import format_metrics, write_metrics
from detres.io.checkpoint import load_checkpoint
from detres.modeling.resnet import build_resnet


def main() -> int:
    parser = tool_parser(__doc__)
    add_cfg_from_ckpt(parser)
    parser.add_argument("--ckpt", required=True, metavar="PTH",
                        help="classification checkpoint (tools/train_cls.py), e.g. runs/cls_demo/model_final.pth")
    parser.add_argument("--mode", choices=CLS_MODES,
                        help=f"testing: one of {', '.join(CLS_MODES)} (default: test.cls_mode of the config)")
    parser.add_argument("--out", metavar="JSON", help="metrics json to write, e.g. m.json (default: print only)")
    add_overrides(parser)
    add_progress(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_for_checkpoint(args.cfg, args.ckpt, args.overrides)
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
                                  scales=cfg.test.cls_scales, progress=lambda it: progress(it, desc=mode))
    print(format_metrics(metrics))
    if args.out:
        write_metrics(metrics, args.out)
    return 0


if __name__ == "__main__":
    run_main(main)
