"""Where a training step's time goes, detres beside the benchmark's peer: torch.profiler's self time per op.

    python tools/profile_det.py --cfg configs/coco_r50.yaml [--images 1] [--top 12] [--inference] [KEY=VALUE ...]

Same calibrated weights and synthetic images as tools/bench.py. Use it to see what is left to speed up: when
convolutions (oneDNN) are nearly all of both sides' time, only fewer FLOPs or lower precision go faster.
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from detres.cli import add_overrides, run_main, tool_parser
from detres.config import load_config
from detres.engine.trainer import training_layout
from detres.modeling.fast_inference import optimize_for_inference
from detres.modeling.faster_rcnn import build_faster_rcnn
from detres.perf.bench import calibrate_benchmark_model, image_size
from detres.perf.measure import training_step
from detres.perf.peer import build_peer
from detres.perf.synthetic import synthetic_batch


def _self_times(call, steps: int) -> tuple[float, list[tuple[str, float]]]:
    """(total seconds per step, [(op, self seconds per step)] longest first) of `call` under the profiler."""
    call()  # warm-up: oneDNN primitives, packed weights, optimizer state
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            call()
    rows = [(e.key, e.self_cpu_time_total / 1e6 / steps) for e in prof.key_averages()]
    rows.sort(key=lambda r: -r[1])
    return sum(t for _, t in rows), rows


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--cfg", required=True, metavar="YAML", help="YAML config file, e.g. configs/coco_r50.yaml")
    parser.add_argument("--images", type=int, default=1, metavar="N", help="images per training step")
    parser.add_argument("--steps", type=int, default=2, metavar="N", help="profiled steps (after one warm-up)")
    parser.add_argument("--top", type=int, default=12, metavar="N", help="ops listed per side")
    parser.add_argument("--inference", action="store_true",
                        help="profile batch inference instead of training (default: a training step)")
    add_overrides(parser)
    args = parser.parse_args()
    cfg = load_config(args.cfg, args.overrides)
    height, width = image_size(cfg.data.input.test_scale, cfg.data.input.max_size)
    images, targets = synthetic_batch(args.images + 2, height=height, width=width, num_classes=cfg.model.num_classes,
                                      pixel_mean=cfg.model.backbone.pixel_mean,
                                      pixel_std=cfg.model.backbone.pixel_std, seed=0)
    model = build_faster_rcnn(cfg)
    calibrate_benchmark_model(model, images[-2:])
    images, targets = images[:args.images], targets[:args.images]
    peer = build_peer(model.eval(), cfg)
    if args.inference:
        fast = optimize_for_inference(model.eval())
        peer.eval()
        sides = {"detres": lambda: fast(images), "peer": lambda: _no_grad(peer, images)}
    else:
        device = torch.device("cpu")
        sides = {"detres": training_step(training_layout(model, cfg), images, targets, device=device),
                 "peer": training_step(peer, images, targets, device=device)}
    for name, call in sides.items():
        total, rows = _self_times(call, args.steps)
        print(f"\n{name}: {total:.3f} s per {'inference' if args.inference else 'training step'} (profiled)")
        for op, seconds in rows[:args.top]:
            print(f"  {op:<48} {seconds:8.3f} s  {100 * seconds / total:5.1f}%")
    return 0


def _no_grad(model, images):
    with torch.inference_mode():
        return model(images)


if __name__ == "__main__":
    run_main(main)
