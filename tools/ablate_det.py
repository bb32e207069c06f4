"""detres's Table 9 (App. B): baseline, + box refinement, + context, + multi-scale testing, ensemble.

    python tools/ablate_det.py --cfg configs/demo.yaml --ckpt runs/demo/model_final.pth \
        --ckpt-context runs/demo_ctx/model_final.pth [--extra-ckpt more.pth ...] --out runs/table9

Rows are cumulative as in the paper; each reports mAP@.5 and mAP@[.5,.95] (COCO metrics) and seconds/image.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from detres.cli import add_overrides, add_progress, run_main, tool_parser
from detres.cli.ckpt_config import add_cfg_from_ckpt, config_for_checkpoint
from detres.data.detection import build_detection_dataset
from detres.distributed import resolve_device
from detres.engine.inference import run_inference
from detres.engine.loading import load_detector
from detres.engine.trainer import eval_loader
from detres.evaluation.evaluate import evaluate_detections
from detres.modeling.detector import Detector, inference_options
from detres.modeling.fast_inference import autocast_dtype


def rows(base, ctx, extra, options):
    """(name, models, options) of each cumulative row."""
    refine = replace(options, box_refine=True, multiscale=False)
    multi = replace(refine, multiscale=True)
    out = [("baseline", [base], replace(options, box_refine=False, multiscale=False)),
           ("+ box refinement", [base], refine)]
    if ctx is not None:
        out += [("+ context", [ctx], refine), ("+ multi-scale testing", [ctx], multi)]
        members = [base, ctx, *extra]
    else:
        out += [("+ multi-scale testing", [base], multi)]
        members = [base, *extra]
    if len(members) > 1:
        out.append((f"ensemble of {len(members)}", members, multi))
    return out


def main() -> int:
    parser = tool_parser(__doc__)
    add_cfg_from_ckpt(parser)
    parser.add_argument("--ckpt", required=True, metavar="PTH",
                        help="baseline model (no context), e.g. runs/demo/model_final.pth")
    parser.add_argument("--ckpt-context", metavar="PTH",
                        help="model trained with model.roi_head.context=true, e.g. runs/demo_ctx/model_final.pth "
                             "(default: none, the context rows are left out)")
    parser.add_argument("--extra-ckpt", action="append", default=[], metavar="PTH",
                        help="more ensemble members; repeat for several (default: none)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="folder for table9.json and table9.md, e.g. runs/table9 (default: print only)")
    add_overrides(parser)
    add_progress(parser)
    args = parser.parse_args()
    cfg = config_for_checkpoint(args.cfg, args.ckpt, args.overrides)
    device = resolve_device(cfg.device)
    base = load_detector(args.ckpt, cfg, optimize=True)[0].to(device)
    ctx = load_detector(args.ckpt_context, cfg, optimize=True)[0].to(device) if args.ckpt_context else None
    extra = [load_detector(p, cfg, optimize=True)[0].to(device) for p in args.extra_ckpt]
    dataset = build_detection_dataset(cfg.data.test, input_cfg=cfg.data.input, pixel_mean=cfg.model.backbone.pixel_mean,
                                      pixel_std=cfg.model.backbone.pixel_std, train=False)
    table = []
    for name, models, options in rows(base, ctx, extra, inference_options(cfg)):
        tic = time.perf_counter()
        with torch.no_grad():
            detections = run_inference(Detector(models, options), eval_loader(cfg, dataset), device=device,
                                       autocast_dtype=autocast_dtype(cfg.test.precision, device))
        seconds = (time.perf_counter() - tic) / len(dataset)
        metrics = evaluate_detections(dataset, detections, ["coco"],
                                      cfg.data.test.ann_file if cfg.data.test.format == "coco" else None)
        table.append({"row": name, "mAP@.5": metrics["coco/AP50"], "mAP@[.5,.95]": metrics["coco/AP"],
                      "s/img": seconds})
        print(f"{name:<24} {metrics['coco/AP50']:6.1f} {metrics['coco/AP']:6.1f} {seconds:7.3f}s/img", flush=True)
    markdown = "| | mAP@.5 | mAP@[.5, .95] | s/img |\n|---|---|---|---|\n" + "".join(
        f"| {r['row']} | {r['mAP@.5']:.1f} | {r['mAP@[.5,.95]']:.1f} | {r['s/img']:.3f} |\n" for r in table)
    print(markdown)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table9.json").write_text(json.dumps(table, indent=2))
        (args.out / "table9.md").write_text(markdown)
    return 0


if __name__ == "__main__":
    run_main(main)
