"""Wall time of one training iteration and of one inference for a detection config, on synthetic images.

    python tools/time_det.py --cfg configs/coco_r101.yaml [--images 1] [--runs 3] [KEY=VALUE ...]

Weights are random but calibrated (BN statistics from real activations, trained-like logit spread), so the
RPN, NMS and post-processing do the work they do on a trained model. For the side-by-side comparison with
torchvision's Faster R-CNN see tools/bench.py.
"""

from __future__ import annotations

import statistics
import time

import torch

from detres.cli import add_overrides, run_main, tool_parser
from detres.config import load_config
from detres.engine.solver import build_optimizer
from detres.engine.trainer import training_layout
from detres.modeling.fast_inference import optimize_for_inference
from detres.modeling.faster_rcnn import build_faster_rcnn
from detres.perf.calibrate import calibrate_for_benchmark
from detres.perf.synthetic import synthetic_batch


def _median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--cfg", required=True, metavar="YAML", help="YAML config file, e.g. configs/coco_r101.yaml")
    parser.add_argument("--images", type=int, default=1, metavar="N", help="images per training iteration")
    parser.add_argument("--runs", type=int, default=3, metavar="N",
                        help="timed runs after one warm-up; the median is printed")
    add_overrides(parser)
    args = parser.parse_args()
    cfg = load_config(args.cfg, args.overrides)
    short, long = cfg.data.input.test_scale, cfg.data.input.max_size * 4 // 5
    images, targets = synthetic_batch(args.images, height=short, width=long, num_classes=cfg.model.num_classes,
                                      pixel_mean=cfg.model.backbone.pixel_mean, pixel_std=cfg.model.backbone.pixel_std,
                                      seed=0)
    model = build_faster_rcnn(cfg)
    calibrate_for_benchmark(model, images[:1], output_std=[(model.rpn.head.cls_logits, 1.0),
                                                            (model.roi_head.predictor.cls_score, 1.0)])
    model = training_layout(model, cfg)  # as the Trainer trains it
    optimizer = build_optimizer(model, cfg.solver)

    def train_step() -> None:
        model.train()
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train_s = _median_seconds(train_step, args.runs)
    fast = optimize_for_inference(model.eval())
    infer_s = _median_seconds(lambda: fast(images[:1]), args.runs)
    print(f"{args.cfg}: {short}x{long} images, {torch.get_num_threads()} threads: "
          f"train {train_s:.2f} s/iteration ({args.images} image(s)), inference {infer_s:.2f} s/image")
    return 0


if __name__ == "__main__":
    run_main(main)
