"""detres's Table 9 (App. B), extended: baseline, + box refinement, + context, + multi-scale testing, + multi-scale RPN
testing, + multi-scale training, ensemble; and step-wise instead of joint training as a separate comparison.

    python tools/ablate_det.py --cfg configs/demo.yaml --ckpt runs/demo/model_final.pth \
        --ckpt-context runs/demo_ctx/model_final.pth [--ckpt-mstrain runs/demo_ms/model_final.pth] \
        [--ckpt-stepwise runs/demo_stepwise/model_final.pth] [--extra-ckpt more.pth ...] --out runs/table9
    # 3 seeds: every checkpoint path holds {seed}; rows report mean +- sample standard deviation over the seeds
    python tools/ablate_det.py --cfg configs/demo.yaml --seeds 3 --ckpt runs/demo_s{seed}/model_final.pth ...

Rows are cumulative as in the paper; each reports mAP@.5 and mAP@[.5,.95] (COCO metrics) and seconds/image.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from detres.cli import add_overrides, add_progress, run_main, tool_parser
from detres.cli.ckpt_config import add_cfg_from_ckpt, config_for_checkpoint
from detres.data.detection import build_split
from detres.data.formats import coco_gt_file
from detres.distributed import resolve_device
from detres.engine.inference import run_inference
from detres.engine.loading import load_detector
from detres.engine.trainer import eval_loader
from detres.errors import UserError
from detres.evaluation.evaluate import evaluate_detections
from detres.modeling.detector import Detector, inference_options
from detres.modeling.fast_inference import autocast_dtype


def rows(base, ctx, extra, options, mstrain=None):
    """(name, models, options) of each cumulative row."""
    refine = replace(options, box_refine=True, multiscale=False, multiscale_rpn=False)
    multi = replace(refine, multiscale=True)
    multi_rpn = replace(multi, multiscale_rpn=True)
    out = [("baseline", [base], replace(options, box_refine=False, multiscale=False, multiscale_rpn=False)),
           ("+ box refinement", [base], refine)]
    top = ctx if ctx is not None else base
    if ctx is not None:
        out += [("+ context", [ctx], refine)]
    out += [("+ multi-scale testing", [top], multi), ("+ multi-scale RPN testing", [top], multi_rpn)]
    if mstrain is not None:
        out.append(("+ multi-scale training", [mstrain], multi_rpn))
        top = mstrain
    members = [m for m in (base, ctx) if m is not None and m is not top] + [top, *extra]
    if len(members) > 1:
        out.append((f"ensemble of {len(members)}", members, multi_rpn))
    return out


def stepwise_rows(joint, stepwise, options):
    """The separate comparison: the same single-scale test of the joint and the step-wise model."""
    plain = replace(options, box_refine=False, multiscale=False, multiscale_rpn=False)
    return [("joint training", [joint], plain), ("step-wise instead of joint", [stepwise], plain)]


def _paths(template: str | None, seeds: int) -> list[str | None]:
    """One checkpoint per seed: `{seed}` in the path is replaced by 0, 1, ...; a path without it serves every seed."""
    if template is None:
        return [None] * seeds
    return [template.format(seed=s) if "{seed}" in template else template for s in range(seeds)]


def _score(models, options, cfg, dataset, device) -> dict[str, float]:
    tic = time.perf_counter()
    with torch.no_grad():
        detections = run_inference(Detector(models, options), eval_loader(cfg, dataset), device=device,
                                   autocast_dtype=autocast_dtype(cfg.test.precision, device), progress=False)
    seconds = (time.perf_counter() - tic) / len(dataset)
    metrics = evaluate_detections(dataset, detections, ["coco"],
                                  coco_gt_file(cfg.data.test),
                                  coco_backend=cfg.test.coco_backend)
    return {"mAP@.5": metrics["coco/AP50"], "mAP@[.5,.95]": metrics["coco/AP"], "s/img": seconds}


def _summary(name: str, runs: list[dict[str, float]]) -> dict:
    """Mean and sample standard deviation (0 with one seed) of each measure over the seeds."""
    out: dict = {"row": name, "seeds": len(runs)}
    for key in ("mAP@.5", "mAP@[.5,.95]", "s/img"):
        values = [r[key] for r in runs]
        out[key] = statistics.fmean(values)
        out[f"{key} std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out[f"{key} per seed"] = values
    return out


def _markdown(table: list[dict]) -> str:
    def cell(r, key, digits):
        return f"{r[key]:.{digits}f}" + (f" ± {r[key + ' std']:.{digits}f}" if r["seeds"] > 1 else "")
    return "| | mAP@.5 | mAP@[.5, .95] | s/img |\n|---|---|---|---|\n" + "".join(
        f"| {r['row']} | {cell(r, 'mAP@.5', 1)} | {cell(r, 'mAP@[.5,.95]', 1)} | {cell(r, 's/img', 3)} |\n"
        for r in table)


def main() -> int:
    parser = tool_parser(__doc__)
    add_cfg_from_ckpt(parser)
    parser.add_argument("--ckpt", required=True, metavar="PTH",
                        help="baseline model (no context), e.g. runs/demo/model_final.pth; with --seeds, a path "
                             "with {seed}: runs/demo_s{seed}/model_final.pth")
    parser.add_argument("--ckpt-context", metavar="PTH",
                        help="model trained with model.roi_head.context=true, e.g. runs/demo_ctx/model_final.pth "
                             "(default: none, the context rows are left out)")
    parser.add_argument("--ckpt-mstrain", metavar="PTH",
                        help="model trained with multi-scale training (data.input.train_scale_source=test_pyramid, "
                             "and context if --ckpt-context is given) for the '+ multi-scale training' row "
                             "(default: row left out), e.g. runs/demo_ms/model_final.pth")
    parser.add_argument("--ckpt-stepwise", metavar="PTH",
                        help="model trained with solver.mode=stepwise, compared with --ckpt (default: no "
                             "comparison), e.g. runs/demo_stepwise/model_final.pth")
    parser.add_argument("--extra-ckpt", action="append", default=[], metavar="PTH",
                        help="more ensemble members; repeat for several (default: none), e.g. "
                             "runs/demo_s1/model_final.pth")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="models per row, trained with seed=0..N-1; checkpoint paths hold {seed}, e.g. --seeds 3")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="folder for table9.json and table9.md, e.g. runs/table9 (default: print only)")
    add_overrides(parser)
    add_progress(parser)
    args = parser.parse_args()
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    cfg = config_for_checkpoint(args.cfg, args.ckpt.replace("{seed}", "0"), args.overrides)
    device = resolve_device(cfg.device)

    def load(path):
        return None if path is None else load_detector(path, cfg, optimize=True)[0].to(device)

    dataset = build_split(cfg.data, "test", pixel_mean=cfg.model.backbone.pixel_mean,
                          pixel_std=cfg.model.backbone.pixel_std, train=False, seed=cfg.seed)
    options = inference_options(cfg)
    per_row: dict[str, list[dict[str, float]]] = {}
    compare: dict[str, list[dict[str, float]]] = {}
    columns = zip(_paths(args.ckpt, args.seeds), _paths(args.ckpt_context, args.seeds),
                  _paths(args.ckpt_mstrain, args.seeds), _paths(args.ckpt_stepwise, args.seeds),
                  *[_paths(p, args.seeds) for p in args.extra_ckpt])
    for seed, (base_p, ctx_p, ms_p, sw_p, *extra_p) in enumerate(columns):
        base, ctx, mstrain = load(base_p), load(ctx_p), load(ms_p)
        for name, models, opts in rows(base, ctx, [load(p) for p in extra_p], options, mstrain):
            result = per_row.setdefault(name, [])
            result.append(_score(models, opts, cfg, dataset, device))
            print(f"seed {seed}  {name:<28} {result[-1]['mAP@.5']:6.1f} {result[-1]['mAP@[.5,.95]']:6.1f} "
                  f"{result[-1]['s/img']:7.3f}s/img", flush=True)
        if sw_p is not None:
            for name, models, opts in stepwise_rows(base, load(sw_p), options):
                compare.setdefault(name, []).append(_score(models, opts, cfg, dataset, device))
                print(f"seed {seed}  {name:<28} {compare[name][-1]['mAP@.5']:6.1f}", flush=True)
    table = [_summary(name, runs) for name, runs in per_row.items()]
    comparison = [_summary(name, runs) for name, runs in compare.items()]
    markdown = _markdown(table) + (f"\n{_markdown(comparison)}" if comparison else "")
    print(markdown)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table9.json").write_text(json.dumps({"rows": table, "stepwise_vs_joint": comparison}, indent=2))
        (args.out / "table9.md").write_text(markdown)
    return 0


if __name__ == "__main__":
    run_main(main)
