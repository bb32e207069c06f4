"""The embedded default, the paper's pipeline in miniature on the CPU with no data and no weights:

1. generate the synthetic detection set (COCO json and VOC xml) and the synthetic classification set;
2. pre-train the detector's ResNet as a classifier on the classification set (as the paper starts from ImageNet);
3. train the C4 Faster R-CNN from that backbone, evaluate it (COCO and VOC metrics);
4. draw its detections on the validation images with tools/infer.py.

    python tools/demo.py [--cfg configs/demo.yaml] [--pretrain-cfg configs/cls_demo.yaml] [KEY=VALUE ...]

A finished stage is not run again: delete its folder (runs/demo_pretrain, runs/demo) to redo it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

from detres.cli import add_overrides, add_progress, run_main, tool_parser
from detres.config import Config, load_config
from detres.data.demo_data import ensure_split_data
from detres.engine.cls_trainer import train_classifier
from detres.engine.train import train_detector
from detres.evaluation.metrics_file import format_metrics
from detres.io.checkpoint import latest_checkpoint

REPO = Path(__file__).resolve().parents[1]


def pretrained_backbone(det_cfg: Config, pretrain_cfg: Path) -> Path:
    """Classification pre-training of the detector's backbone (its depth and width) on the synthetic shapes;
    returns the checkpoint, which loads as `model.backbone.weights`. Skipped when it exists."""
    out = Path(f"{det_cfg.output.dir}_pretrain")
    final = out / "model_final.pth"
    if final.is_file():
        return final
    bb = det_cfg.model.backbone
    cfg = load_config(pretrain_cfg, [f"model.backbone.depth={bb.depth}", f"model.backbone.width={bb.width}",
                                     f"output.dir={out}", f"seed={det_cfg.seed}"])
    ensure_split_data(cfg.data, cfg.data.train, seed=cfg.seed)
    metrics = train_classifier(cfg, resume=latest_checkpoint(out) is not None)
    print(f"pre-training: top-1 error {metrics['cls/top1_err']:.1f}%, top-5 error {metrics['cls/top5_err']:.1f}% "
          f"on the classification shapes ({final})", flush=True)
    return final


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--cfg", default=str(REPO / "configs" / "demo.yaml"), metavar="YAML",
                        help="detection config of the demo (default: configs/demo.yaml of the repository)")
    parser.add_argument("--pretrain-cfg", default=str(REPO / "configs" / "cls_demo.yaml"), metavar="YAML",
                        help="classification config of the backbone pre-training, used when "
                             "model.backbone.weights is empty (default: configs/cls_demo.yaml of the repository)")
    add_overrides(parser, help="overrides of the detection config, KEY=VALUE, e.g. solver.max_iter=300 "
                               "(also passed to the test and infer steps)")
    add_progress(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tic = time.perf_counter()
    cfg = load_config(args.cfg, args.overrides)
    ensure_split_data(cfg.data, cfg.data.train, seed=cfg.seed)  # before pre-training, as it always was
    if not cfg.model.backbone.weights:
        cfg.model.backbone.weights = str(pretrained_backbone(cfg, Path(args.pretrain_cfg)))
    run = Path(cfg.output.dir)
    final = run / "model_final.pth"
    if final.is_file():
        print(f"{final} exists: evaluating it (delete {run} to train again)")
        subprocess.run([sys.executable, "-m", "detres", "test", "--cfg", args.cfg, "--ckpt", str(final),
                        "--out", str(run / "metrics.json"), *args.overrides], check=True)
    else:
        metrics = train_detector(cfg, resume=latest_checkpoint(run) is not None)
        print(format_metrics(metrics))
    predictions = run / "predictions"
    subprocess.run([sys.executable, "-m", "detres", "infer", "--cfg", args.cfg, "--ckpt", str(final),
                    "--input", cfg.data.test.image_dir, "--output", str(predictions), *args.overrides], check=True)
    print(f"demo finished in {time.perf_counter() - tic:.0f}s: metrics in {run / 'metrics.json'}, "
          f"drawn predictions in {predictions}")
    return 0


if __name__ == "__main__":
    run_main(main)
