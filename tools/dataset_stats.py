"""Dataset statistics, anchor coverage and a recommended data.train_crop; with --fit-anchors, anchors and input
scale fitted to the boxes. With data.train_crop set, box sizes are those of the windows at the training scale.

    python tools/dataset_stats.py --cfg configs/demo.yaml --fit-anchors
    python tools/dataset_stats.py --cfg my.yaml --split test --out stats/ data.input.train_scales=[800]
    python tools/dataset_stats.py --cfg configs/large_shapes_scratch_gn.yaml
"""

from __future__ import annotations

import json
from pathlib import Path

from detres.cli import add_overrides, run_main, tool_parser
from detres.config import load_config
from detres.data.crops import TrainCrop, recommend_train_crop
from detres.data.detection import read_split
from detres.data.stats import dataset_summary, scaled_boxes, write_histograms
from detres.errors import UserError
from detres.io.atomic import write_atomic
from detres.modeling.anchor_fit import coverage, fit_anchors_and_scale, scale_note


def _write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=1), fix="check --out")


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--cfg", required=True, help="detection config whose data.<split> is read, "
                                                     "e.g. configs/demo.yaml")
    parser.add_argument("--split", choices=["train", "test"], default="train",
                        help="which dataset of the config (data.train or data.test); default: train")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for stats.json and the histograms; default: <output.dir>/dataset_stats, "
                             "e.g. --out stats/")
    parser.add_argument("--fit-anchors", action="store_true",
                        help="also propose model.rpn.anchor_sizes/aspect_ratios and data.input scales reaching "
                             "--target coverage at IoU 0.5, printed as KEY=VALUE overrides and YAML; default: off")
    parser.add_argument("--target", type=float, default=0.99,
                        help="with --fit-anchors: fraction of boxes whose best anchor has IoU >= --iou; default 0.99")
    parser.add_argument("--iou", type=float, default=0.5,
                        help="with --fit-anchors: the IoU at which a box counts as covered; default 0.5 "
                             "(0.7 is the RPN's foreground threshold), e.g. --iou 0.7")
    parser.add_argument("--max-anchors", type=int, default=15,
                        help="with --fit-anchors: most anchors per position (sizes x ratios); default 15")
    parser.add_argument("--max-upscale", type=float, default=4.0,
                        help="with --fit-anchors: largest input upscale tried for small objects (1 = keep the "
                             "configured scale); default 4, e.g. --max-upscale 1")
    add_overrides(parser)
    args = parser.parse_args()
    if not 0.0 < args.target <= 1.0:
        raise UserError(f"--target must be a fraction in (0, 1], got {args.target}; for example 0.99")
    if not 0.0 < args.iou < 1.0:
        raise UserError(f"--iou must be in (0, 1), got {args.iou}; for example 0.5")
    cfg = load_config(args.cfg, args.overrides)
    records, class_map = read_split(cfg.data, args.split, seed=cfg.seed)
    inp, rpn = cfg.data.input, cfg.model.rpn
    crop = TrainCrop.from_config(cfg.data)
    table = scaled_boxes(records, scales=list(inp.train_scales), max_size=inp.max_size, crop=crop.size if crop else 0)
    stats = dataset_summary(records, class_map, table)
    stats["train_crop"] = crop.size if crop else 0
    stats["recommended_train_crop"] = recommend_train_crop(records, train_scale=min(inp.train_scales))
    # coverage: anchors at the nearest stride-16 grid point, as the RPN labels them (anchor_fit's docstring)
    stats["anchor_coverage"] = {"anchor_sizes": list(rpn.anchor_sizes), "aspect_ratios": list(rpn.aspect_ratios),
                                "method": "best IoU with the anchors at the box centre's nearest stride-16 grid "
                                          "point", **coverage(table, sizes=rpn.anchor_sizes, ratios=rpn.aspect_ratios)}
    out = args.out or Path(cfg.output.dir) / "dataset_stats"
    out.mkdir(parents=True, exist_ok=True)
    pngs = write_histograms(records, table, out, anchor_sizes=list(rpn.anchor_sizes))

    print(f"{stats['images']} images ({stats['images_without_boxes']} without boxes), {stats['boxes']} boxes "
          f"(+{stats['boxes_ignored']} ignored), {stats['boxes_per_image']['mean']:.2f} per image "
          f"(max {stats['boxes_per_image'].get('max', 0):g})")
    print("boxes per class: " + ", ".join(f"{k} {v}" for k, v in stats["boxes_per_class"].items()))
    side, ratio = stats["box_side_px_at_train_scale"], stats["box_aspect_ratio_h_over_w"]
    where = f" of data.train_crop={crop.size} windows" if crop else ""
    print(f"box side sqrt(w*h){where} at train scale {stats['train_scales']}: min {side['min']:.1f}, "
          f"p1 {side['p1']:.1f}, median {side['median']:.1f}, p99 {side['p99']:.1f}, max {side['max']:.1f} px")
    print(f"aspect ratio h/w: p1 {ratio['p1']:.2f}, median {ratio['median']:.2f}, p99 {ratio['p99']:.2f}")
    cov = stats["anchor_coverage"]
    print(f"configured anchors {list(rpn.anchor_sizes)} x {list(rpn.aspect_ratios)}: "
          f"{100 * cov['iou>=0.5']:.1f}% of boxes at IoU >= 0.5, {100 * cov['iou>=0.7']:.1f}% at IoU >= 0.7")

    advice = stats["recommended_train_crop"]
    if advice["train_crop"]:
        print(f"recommended data.train_crop={advice['train_crop']}: the 99th-percentile object "
              f"({advice['p99_longer_side_px']:g} px) lies whole in {100 * advice['p99_whole_probability']:.0f}% of "
              f"random windows; at train scale {advice['train_scale']} windows are zoomed x{advice['zoom']:g}; "
              f"{advice['windows_per_epoch']} windows per epoch from {advice['images']} images; test whole scenes "
              f"with test.tile_size={advice['train_crop']}")
    else:
        print(f"recommended data.train_crop=0: {advice['reason']}")

    if args.fit_anchors:
        fit = fit_anchors_and_scale(records, train_scales=list(inp.train_scales), test_scale=inp.test_scale,
                                    max_size=inp.max_size, target=args.target, iou=args.iou,
                                    max_anchors=args.max_anchors, max_upscale=args.max_upscale)
        stats["fitted_anchors"] = {"anchor_sizes": fit.anchor_sizes, "aspect_ratios": fit.aspect_ratios,
                                   "train_scales": fit.train_scales, "test_scale": fit.test_scale,
                                   "max_size": fit.max_size, "num_anchors": fit.num_anchors,
                                   "reached_target": fit.reached, "target": args.target, "iou": args.iou,
                                   **fit.coverage}
        verdict = "reaches" if fit.reached else "does NOT reach (best found)"
        reached = ", ".join(f"{100 * v:.1f}% at {k.replace('iou>=', 'IoU >= ')}" for k, v in fit.coverage.items())
        print(f"\nfitted: {fit.num_anchors} anchors, {reached}: {verdict} the target {100 * args.target:g}% at "
              f"IoU >= {args.iou:g}; {scale_note(fit, list(inp.train_scales))}")
        print("overrides to paste:\n  " + " ".join(fit.overrides()))
        print("or in the config:\n" + "".join(f"  {line}\n" for line in fit.yaml().splitlines()), end="")
    _write_json(out / "stats.json", stats)
    print(f"wrote {out / 'stats.json'} and {', '.join(p.name for p in pngs)}")
    return 0


if __name__ == "__main__":
    run_main(main)
