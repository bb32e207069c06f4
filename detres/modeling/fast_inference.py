"""Inference-only speed-ups for a trained detector that keep its detections (fp32) or its mAP (bf16/fp16).

What each one buys on a C4 detector is measured in BENCHMARKS.md: frozen BN folded into the preceding conv
(one pass over each activation instead of two), channels-last tensors (oneDNN / cuDNN's native layout for the
conv5_x head that dominates), `torch.inference_mode` (no autograd bookkeeping) and, as an option,
reduced-precision autocast.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detres.errors import ConfigError
from detres.modeling.batchnorm import fold_frozen_bn

PRECISIONS = ("fp32", "bf16", "fp16")


class FastInference(nn.Module):
    """Runs the wrapped detector under `torch.inference_mode` and, optionally, autocast; outputs come back float32.

    The wrapped model is `.model`; the wrapper itself holds no weights of its own (do not save its state dict).
    """

    def __init__(self, *, model: nn.Module, precision: str = "fp32") -> None:
        super().__init__()
        self.model = model
        self.precision = precision

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> list[dict[str, Tensor]]:
        """images: list of [3, H, W] normalized float32 -> per image dict(boxes [K, 4], scores [K], labels [K])."""
        if targets is not None:
            raise ValueError("FastInference is inference-only; train the original model, not the optimized one")
        device = images[0].device
        with torch.inference_mode(), _autocast(self.precision, device):
            outputs = self.model(images)
        # Downstream code (evaluation, NMS merges across models) expects float32 boxes and scores.
        return [{k: v.float() if v.is_floating_point() else v for k, v in out.items()} for out in outputs]


def optimize_for_inference(model: nn.Module, *, precision: str = "fp32", channels_last: bool = True,
                           fold_bn: bool = True) -> FastInference:
    """Fold frozen BN into convs, move to channels-last and wrap for inference (autocast when precision != fp32).

    model: a detector in eval semantics (FrozenBatchNorm2d, no training afterwards: it is changed IN PLACE,
    deep-copy it first to keep the original). precision: "fp32" (detections unchanged up to float rounding),
    "bf16" (CPU or CUDA autocast) or "fp16" (CUDA only). channels_last / fold_bn=False switch those steps off
    (the benchmark's ablation rows).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    model.eval()
    if fold_bn:
        model = fold_frozen_bn(model)
    if channels_last:
        # 4-D weights become NHWC; convs then produce NHWC outputs, which the following convs keep.
        model = model.to(memory_format=torch.channels_last)
    for param in model.parameters():
        param.requires_grad_(False)
    return FastInference(model=model, precision=precision)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision name (None for fp32); ConfigError for an unknown one or fp16 on CPU."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} (test.precision), got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; on CPU use bf16 (or fp32)")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def _autocast(precision: str, device: torch.device) -> torch.autocast:
    dtype = autocast_dtype(precision, device)
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
