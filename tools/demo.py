"""The embedded default: synthetic shapes -> a small C4 detector trained on the CPU -> COCO/VOC metrics ->
drawn predictions on the validation images. Runs on a fresh machine with no data and no weights.

    python tools/demo.py [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import subprocess
import sys
import time
from pathlib import Path

from detres.cli import run_main
from detres.config import load_config
from detres.engine.checkpoint import latest_checkpoint
from detres.engine.trainer import train_detector
from detres.evaluation.metrics_file import format_metrics

REPO = Path(__file__).resolve().parents[1]


def ensure_dataset(script: Path, out: Path) -> None:
    """Generate the synthetic set with its script when its annotation files are absent."""
    if (out / "coco" / "annotations" / "instances_val.json").is_file():
        return
    print(f"generating the synthetic dataset in {out} ...")
    spec = importlib.util.spec_from_file_location("make_shapes", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(out, seed=0)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the detection demo end to end on the CPU.")
    parser.add_argument("--cfg", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tic = time.perf_counter()
    cfg = load_config(args.cfg, args.overrides)
    data_root = Path(cfg.data.train.ann_file).parents[2]
    ensure_dataset(REPO / cfg.data.generate_demo, data_root)
    run = Path(cfg.output.dir)
    final = run / "model_final.pth"
    if final.is_file():
        print(f"{final} exists: evaluating it (delete {run} to train again)")
        subprocess.run([sys.executable, str(REPO / "tools" / "test_det.py"), "--cfg", args.cfg, "--ckpt", str(final),
                        "--out", str(run / "metrics.json"), *args.overrides], check=True)
    else:
        metrics = train_detector(cfg, resume=latest_checkpoint(run) is not None)
        print(format_metrics(metrics))
    val_images = Path(cfg.data.test.image_dir)
    predictions = run / "predictions"
    subprocess.run([sys.executable, str(REPO / "tools" / "infer.py"), "--cfg", args.cfg, "--ckpt", str(final),
                    "--input", str(val_images), "--output", str(predictions), *args.overrides], check=True)
    print(f"demo finished in {time.perf_counter() - tic:.0f}s: metrics in {run / 'metrics.json'}, "
          f"drawn predictions in {predictions}")
    return 0


if __name__ == "__main__":
    run_main(main)
