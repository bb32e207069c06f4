"""Realistic activations for a benchmark without a trained checkpoint.

A randomly initialized detector with frozen BN at mean 0 / variance 1 has activations that grow block after block
and a classifier whose near-uniform scores never pass the score threshold: its timings (NMS, post-processing,
even conv speed on denormals) mean nothing. Calibration fixes both without training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

_BN_TYPES = (FrozenBatchNorm2d, nn.BatchNorm2d)
MAX_STDS = 4.0


@torch.no_grad()
def calibrate_for_benchmark(model: nn.Module, images: list[Tensor], *,
                            output_std: list[tuple[nn.Module, float]] | None = None, passes: int = 2) -> None:
    """Set every BN's statistics from its own input on `images`, and scale each given output layer (Linear or
    Conv2d) so that its outputs, less the bias, have the given standard deviation (or less, so that none exceeds
    4 times it).

    images: list of [3, H, W] normalized float32. Each pass is one eval forward of the whole detector: a hook sets
    each BN's running mean/var to the mean/var of the batch it receives, just before it normalizes it, so every
    layer sees inputs normalized by the calibrated layers before it (trunk on the images, conv5_x on the pooled
    RoIs). Scaling the output layers (e.g. RPN and class logits spread like a trained detector's, so scores pass
    the thresholds without near-ties; small box deltas) changes the RoIs, hence a second pass.
    """
    targets = list(output_std or [])
    for _ in range(passes):
        hooks = [m.register_forward_pre_hook(_set_stats_from_input) for m in model.modules()
                 if isinstance(m, _BN_TYPES)]
        seen: list[list[Tensor]] = [[] for _ in targets]
        for (layer, _), store in zip(targets, seen):
            hooks.append(layer.register_forward_hook(_recorder(layer, store)))
        was_training = model.training
        model.eval()
        try:
            model(images)
        finally:
            for hook in hooks:
                hook.remove()
            model.train(was_training)
        for (layer, std), store in zip(targets, seen):
            if store:
                out = torch.cat(store)
                # Deep trunks give heavy-tailed features; capping |output| at 4 std keeps sigmoid/softmax scores
                # off exactly 1.0, where ties would make the kept detections arbitrary on either side.
                scale = min(std / float(out.std().clamp(min=1e-12)), MAX_STDS * std / float(out.abs().max()))
                layer.weight.mul_(scale)


def _recorder(layer: nn.Module, store: list[Tensor]):
    def record(_module: nn.Module, _args: tuple, output: Tensor) -> None:
        out = output.detach().float()
        if layer.bias is not None:
            shape = (1, -1) + (1,) * (out.dim() - 2)
            out = out - layer.bias.detach().float().reshape(shape)
        store.append(out.flatten())

    return record


def _set_stats_from_input(module: nn.Module, args: tuple[Tensor, ...]) -> None:
    x = args[0].detach().float()
    module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
    module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))
