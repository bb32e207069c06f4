"""The measurements of one detector, as run inside one benchmark child process: speed, memory, FLOPs.

Every function takes a ready model and synthetic inputs; nothing here knows whether it is detres or the peer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from detres.perf.memory import peak_rss_mb, reset_peak_rss
from detres.perf.timing import count_flops, median_seconds


def inference_images_per_s(predict: Callable[[list[Tensor]], object], images: list[Tensor], *, batch: int,
                           device: torch.device, warmup: int, runs: int) -> float:
    """Images per second of `predict` on batches of `batch` images (the first `batch` of `images`).

    Runs under no_grad only: whether inference_mode is used is up to `predict` (an ablation row measures it).
    """
    inputs = [im.to(device) for im in images[:batch]]
    with torch.no_grad():
        seconds = median_seconds(lambda: predict(inputs), device=device, warmup=warmup, runs=runs)
    return batch / seconds


def inference_peak_rss_mb(predict: Callable[[list[Tensor]], object], images: list[Tensor], *,
                          device: torch.device) -> float:
    """Peak resident MiB while `predict` runs once on `images` (the model's weights are resident, so they count)."""
    inputs = [im.to(device) for im in images]
    reset_peak_rss()
    with torch.no_grad():
        predict(inputs)
    return peak_rss_mb()


def training_iterations_per_s(model: nn.Module, images: list[Tensor], targets: list[dict[str, Tensor]], *,
                              device: torch.device, warmup: int, runs: int) -> tuple[float, float]:
    """(iterations/s, peak resident MiB) of SGD steps on one batch: forward with targets, summed losses, backward.

    A small learning rate keeps the weights (and so the proposals and RoI sampling) close to where they started.
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-5, momentum=0.9)
    inputs = [im.to(device) for im in images]
    labelled = [{k: v.to(device) for k, v in t.items()} for t in targets]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        losses = model(inputs, labelled)
        sum(losses.values()).backward()
        optimizer.step()

    step()
    reset_peak_rss()
    seconds = median_seconds(step, device=device, warmup=max(warmup - 1, 0), runs=runs)
    return 1.0 / seconds, peak_rss_mb()


def flops_per_image(predict: Callable[[list[Tensor]], object], image: Tensor, *, device: torch.device) -> float:
    """FLOPs of one single-image inference as torch.utils.flop_counter counts them (convs and matmuls)."""
    with torch.no_grad():
        return float(count_flops(lambda: predict([image.to(device)])))
