"""Wall-clock timing that is honest on CPU and CUDA: warm-up, device synchronization, median of runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work so a timer measures the kernels, not their launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], *, device: torch.device, warmup: int, runs: int) -> float:
    """Median wall time of `fn()` over `runs` calls after `warmup` untimed calls (first calls allocate and pack)."""
    return statistics.median(_wall_times(fn, device=device, warmup=warmup, runs=runs))


def _wall_times(fn: Callable[[], object], *, device: torch.device, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_peak_flops(*, device: torch.device, size: int = 2048, runs: int = 10,
                      dtype: torch.dtype = torch.float32) -> float:
    """This machine's achievable matmul rate in FLOP/s: the fastest of `runs` square [size x size] GEMMs.

    The fastest, not the median: a peak is what the machine can do, and on a shared CPU a median of a few 0.1 s
    GEMMs swung by 30% between two processes of one run. Measured in the same process, thread setting and
    precision as the model, so `achieved / peak` compares like with like. On CUDA a float32 GEMM may use TF32
    exactly when cuDNN's convolutions do (PyTorch's defaults differ: convolutions on, matmuls off), else the
    models' TF32 convolutions would beat the "peak".
    """
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        seconds = min(_wall_times(lambda: torch.mm(a, b), device=device, warmup=2, runs=runs))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    return 2.0 * size**3 / seconds


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` as torch.utils.flop_counter counts them (convs, matmuls; a multiply-add = 2)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())
