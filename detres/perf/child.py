"""One side of the benchmark in its own process, so that its peak memory is its own.

`python -m detres.perf.child SPEC.json RESULT.json`: SPEC names the resolved config, the weights both sides share
and what to measure; RESULT receives a flat dict of numbers. tools/bench.py starts these; people do not.
"""

from __future__ import annotations

import gc
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from detres.config import load_config
from detres.modeling.fast_inference import optimize_for_inference
from detres.modeling.faster_rcnn import build_faster_rcnn
from detres.perf.measure import (
    flops_per_image,
    inference_images_per_s,
    inference_peak_rss_mb,
    training_iterations_per_s,
)
from detres.perf.peer import build_peer
from detres.perf.synthetic import synthetic_batch
from detres.perf.timing import matmul_peak_flops


@dataclass
class ChildSpec:
    """What one child measures. side: "detres" or "peer"; the detres side runs optimize_for_inference with
    `precision`, `channels_last` and `fold_bn` unless `optimized` is False (plain eval model, the ablation's base)."""

    config: str
    weights: str
    side: str
    device: str = "cpu"
    threads: int = 0  # 0: torch's default
    height: int = 600
    width: int = 1000
    batch: int = 2
    train_batch: int = 1
    warmup: int = 1
    runs: int = 3
    seed: int = 0
    optimized: bool = True
    precision: str = "fp32"
    channels_last: bool = True
    fold_bn: bool = True
    tasks: list[str] = field(default_factory=lambda: ["infer", "memory", "train", "flops", "matmul"])
    matmul_size: int = 2048


def run_child(spec: ChildSpec) -> dict[str, float]:
    """Build this side's model from the shared weights and measure `spec.tasks`; returns a flat dict."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    cfg = load_config(spec.config)
    count = max(spec.batch, spec.train_batch)
    images, targets = synthetic_batch(count, height=spec.height, width=spec.width,
                                      num_classes=cfg.model.num_classes,
                                      pixel_mean=cfg.model.backbone.pixel_mean,
                                      pixel_std=cfg.model.backbone.pixel_std, seed=spec.seed)
    result: dict[str, float] = {"threads": float(torch.get_num_threads())}
    if "matmul" in spec.tasks:
        result["matmul_gflops"] = matmul_peak_flops(device=device, size=spec.matmul_size) / 1e9

    def fresh_model() -> torch.nn.Module:
        detres_model = build_faster_rcnn(cfg)
        detres_model.load_state_dict(torch.load(spec.weights, map_location="cpu", weights_only=True))
        if spec.side == "peer":
            peer = build_peer(detres_model, cfg)
            del detres_model
            gc.collect()
            return peer.to(device)
        return detres_model.to(device)

    if {"infer", "memory", "flops"} & set(spec.tasks):
        predict = fresh_model().eval()
        if spec.side == "detres" and spec.optimized:
            # In place: a second copy of the weights would count against detres's peak memory.
            predict = optimize_for_inference(predict, precision=spec.precision,
                                             channels_last=spec.channels_last, fold_bn=spec.fold_bn)
        elif spec.side == "peer":
            predict = _under_inference_mode(predict)
        if "memory" in spec.tasks:
            result["peak_rss_mb"] = inference_peak_rss_mb(predict, images[:1], device=device)
        if "infer" in spec.tasks:
            for batch in sorted({1, spec.batch}):
                result[f"infer_img_s_b{batch}"] = inference_images_per_s(
                    predict, images, batch=batch, device=device, warmup=spec.warmup, runs=spec.runs)
        if "flops" in spec.tasks:
            result["gflops_per_img"] = flops_per_image(predict, images[0], device=device) / 1e9
        del predict
        gc.collect()
    if "train" in spec.tasks:
        its, peak = training_iterations_per_s(fresh_model(), images[:spec.train_batch], targets[:spec.train_batch],
                                              device=device, warmup=spec.warmup, runs=spec.runs)
        result["train_it_s"] = its
        result["train_peak_rss_mb"] = peak
    return result


def _under_inference_mode(model: torch.nn.Module):
    """The peer as torchvision's reference evaluation runs it: under torch.inference_mode."""

    def predict(images):
        with torch.inference_mode():
            return model(images)

    return predict


def main() -> int:
    spec_path, result_path = sys.argv[1], sys.argv[2]
    spec = ChildSpec(**json.loads(Path(spec_path).read_text()))
    result = run_child(spec)
    Path(result_path).write_text(json.dumps(result))
    return 0


def spec_to_json(spec: ChildSpec) -> str:
    return json.dumps(asdict(spec))


if __name__ == "__main__":
    sys.exit(main())
