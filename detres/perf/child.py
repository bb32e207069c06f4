"""Benchmark work in its own process: `python -m detres.perf.child SPEC.json RESULT.json`.

Two kinds of child. A "memory" child builds ONE side (detres or the peer), so its peak resident memory is
its own, and also counts FLOPs and the matmul peak. A "timing" child builds every variant asked for and times
them alternately (see measure.alternating_medians). tools/bench.py starts these; people do not.
"""

from __future__ import annotations

import gc
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from detres.config import Config, load_config
from detres.engine.trainer import training_layout
from detres.modeling.fast_inference import autocast_dtype, optimize_for_inference
from detres.modeling.faster_rcnn import build_faster_rcnn
from detres.perf.measure import alternating_medians, flops_of, peak_gpu_mb_of, peak_rss_of, training_step
from detres.perf.peer import build_peer
from detres.perf.synthetic import synthetic_batch
from detres.perf.timing import matmul_peak_flops


@dataclass
class Variant:
    """One model to measure. side "peer": torchvision's FasterRCNN, float32, under inference_mode as its
    reference evaluation runs it. side "detres": `optimize_for_inference(precision, channels_last, fold_bn)`,
    or the plain eval model when `optimized` is False."""

    name: str
    side: str
    optimized: bool = True
    precision: str = "fp32"
    channels_last: bool = True
    fold_bn: bool = True


@dataclass
class ChildSpec:
    """What one child does. kind "memory": `variants[0]` only; kind "timing": all `variants`, alternating."""

    config: str
    weights: str
    kind: str
    variants: list[Variant]
    device: str = "cpu"
    threads: int = 0  # 0: torch's default
    height: int = 600
    width: int = 1000
    batch: int = 2
    train_batch: int = 1
    warmup: int = 1
    runs: int = 3
    seed: int = 0
    train: bool = True
    matmul_size: int = 2048
    backends: list[str] = field(default_factory=list)  # kind "backends": runtimes to time (detres.perf.backends)
    backend_paths: dict[str, str] = field(default_factory=dict)  # the exported detres folder and peer file


def run_child(spec: ChildSpec) -> dict[str, float]:
    """Build the asked models from the shared weights and measure; returns a flat dict `<variant>/<figure>`."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    cfg = load_config(spec.config)
    images, targets = synthetic_batch(max(spec.batch, spec.train_batch), height=spec.height, width=spec.width,
                                      num_classes=cfg.model.num_classes, pixel_mean=cfg.model.backbone.pixel_mean,
                                      pixel_std=cfg.model.backbone.pixel_std, seed=spec.seed)
    images = [im.to(device) for im in images]
    if spec.kind == "memory":
        return _memory(spec, cfg, images, targets, device)
    if spec.kind == "backends":
        from detres.perf.backends import time_backends

        return time_backends(spec.backend_paths, spec.backends, images, threads=spec.threads, warmup=spec.warmup,
                             runs=spec.runs)
    return _timing(spec, cfg, images, targets, device)


def _memory(spec: ChildSpec, cfg: Config, images: list[Tensor], targets: list[dict], device: torch.device):
    variant = spec.variants[0]
    result = {"threads": float(torch.get_num_threads())}
    # Each side's peak in its own precision (the peer runs float32): bf16 GEMMs run ~2.5x float32 here.
    dtype = autocast_dtype(variant.precision, device) or torch.float32
    result["matmul_gflops"] = matmul_peak_flops(device=device, size=spec.matmul_size, dtype=dtype) / 1e9
    result.update(_inference_memory_and_flops(_predictor(_model(spec, cfg, variant.side, device), variant), images,
                                              device))
    gc.collect()  # the inference model is gone before the training one is built
    if spec.train:
        step = _training_step(spec, cfg, variant, images, targets, device)
        result["train_peak_rss_mb"] = peak_rss_of(step)
        if device.type == "cuda":
            result["train_peak_gpu_mb"] = peak_gpu_mb_of(step, device)
    return {f"{variant.name}/{k}": v for k, v in result.items()}


def _inference_memory_and_flops(predict, images: list[Tensor], device: torch.device) -> dict[str, float]:
    with torch.no_grad():
        result = {"peak_rss_mb": peak_rss_of(lambda: predict(images[:1])),
                  "gflops_per_img": flops_of(lambda: predict(images[:1])) / 1e9}
        if device.type == "cuda":
            result["peak_gpu_mb"] = peak_gpu_mb_of(lambda: predict(images[:1]), device)
        return result


def _timing(spec: ChildSpec, cfg: Config, images: list[Tensor], targets: list[dict], device: torch.device):
    predictors = {v.name: _predictor(_model(spec, cfg, v.side, device), v) for v in spec.variants}
    result: dict[str, float] = {}
    with torch.no_grad():
        for batch in sorted({1, spec.batch}):
            calls = {name: (lambda p=p, b=batch: p(images[:b])) for name, p in predictors.items()}
            medians = alternating_medians(calls, device=device, warmup=spec.warmup, runs=spec.runs)
            result.update({f"{name}/infer_img_s_b{batch}": batch / s for name, s in medians.items()})
    del predictors, calls
    gc.collect()
    if spec.train:
        # Training compares the models as they train: detres as its Trainer runs it (training_layout; under autocast
        # at --precision bf16/fp16, as solver.amp=true trains), the peer as is, in float32.
        steps = {v.name: _training_step(spec, cfg, v, images, targets, device)
                 for v in spec.variants if v.name in ("detres", "peer")}
        medians = alternating_medians(steps, device=device, warmup=spec.warmup + 1, runs=spec.runs)
        result.update({f"{name}/train_it_s": 1.0 / s for name, s in medians.items()})
    return result


def _model(spec: ChildSpec, cfg: Config, side: str, device: torch.device) -> nn.Module:
    detres_model = build_faster_rcnn(cfg)
    detres_model.load_state_dict(torch.load(spec.weights, map_location="cpu", weights_only=True))
    if side == "peer":
        peer = build_peer(detres_model, cfg)
        del detres_model
        gc.collect()
        return peer.to(device)
    return detres_model.to(device)


def _training_step(spec: ChildSpec, cfg: Config, variant: Variant, images: list[Tensor], targets: list[dict],
                   device: torch.device):
    model = _training_model(spec, cfg, variant.side, device)
    dtype = autocast_dtype(variant.precision, device) if variant.side == "detres" else None
    return training_step(model, images[:spec.train_batch], targets[:spec.train_batch], device=device,
                         autocast_dtype=dtype)


def _training_model(spec: ChildSpec, cfg: Config, side: str, device: torch.device) -> nn.Module:
    """A side as it trains: detres in its training layout (channels-last unless solver.channels_last=false)."""
    model = _model(spec, cfg, side, device)
    return training_layout(model, cfg) if side == "detres" else model


def _predictor(model: nn.Module, variant: Variant):
    model.eval()
    if variant.side == "detres" and variant.optimized:
        # In place: a second copy of the weights would count against detres's peak memory.
        return optimize_for_inference(model, precision=variant.precision, channels_last=variant.channels_last,
                                      fold_bn=variant.fold_bn)
    if variant.side == "peer":
        return _under_inference_mode(model)
    return model


def _under_inference_mode(model: nn.Module):
    """The peer as torchvision's reference evaluation (references/detection/engine.py) runs it."""

    def predict(images: list[Tensor]):
        with torch.inference_mode():
            return model(images)

    return predict


def spec_from_dict(data: dict) -> ChildSpec:
    variants = [Variant(**v) for v in data.pop("variants")]
    return ChildSpec(variants=variants, **data)


def main() -> int:
    spec_path, result_path = sys.argv[1], sys.argv[2]
    spec = spec_from_dict(json.loads(Path(spec_path).read_text()))
    Path(result_path).write_text(json.dumps(run_child(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
