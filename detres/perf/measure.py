"""The measurements of detectors inside one benchmark child process: speed, memory, FLOPs.

Nothing here knows whether a model is detres or the peer. Timings alternate between the models measured
(A, B, A, B, ...), so a load that drifts on a shared machine hits every side alike and the ratios stay honest.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from detres.engine.memory import peak_rss_mb, reset_peak_rss
from detres.perf.timing import count_flops, synchronize


def alternating_medians(calls: dict[str, Callable[[], object]], *, device: torch.device, warmup: int,
                        runs: int) -> dict[str, float]:
    """Median seconds of each call over `runs` rounds, every round calling each once in turn, after `warmup`
    untimed rounds (first calls allocate, JIT-compile oneDNN kernels and pack weights)."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def training_step(model: nn.Module, images: list[Tensor], targets: list[dict[str, Tensor]], *,
                  device: torch.device, autocast_dtype: torch.dtype | None = None) -> Callable[[], None]:
    """One SGD step (forward with targets, summed losses, backward, update) on a fixed batch, as a callable;
    the forward under autocast to `autocast_dtype` when given (as the Trainer's solver.amp).

    A small learning rate keeps the weights (and so the proposals and RoI sampling) close to where they started.
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-5, momentum=0.9)
    inputs = [im.to(device) for im in images]
    labelled = [{k: v.to(device) for k, v in t.items()} for t in targets]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            losses = model(inputs, labelled)
        sum(losses.values()).backward()
        optimizer.step()

    return step


def peak_rss_of(call: Callable[[], object], *, repeat: int = 2) -> float:
    """Peak resident MiB while `call` runs `repeat` times (weights already resident count; building does not)."""
    call()  # first call: lazily allocated state (optimizer momenta, packed weights) belongs to the steady state
    reset_peak_rss()
    for _ in range(repeat):
        call()
    return peak_rss_mb()


def peak_gpu_mb_of(call: Callable[[], object], device: torch.device, *, repeat: int = 2) -> float:
    """Peak CUDA memory in MiB allocated while `call` runs `repeat` times, after one untimed call."""
    call()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(repeat):
        call()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def flops_of(call: Callable[[], object]) -> float:
    """FLOPs of one call as torch.utils.flop_counter counts them (convs and matmuls; a multiply-add = 2)."""
    return float(count_flops(call))
