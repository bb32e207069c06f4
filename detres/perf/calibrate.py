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


@torch.no_grad()
def calibrate_for_benchmark(model: nn.Module, images: list[Tensor], *, classifier: nn.Linear | None = None,
                            logit_std: float = 2.0) -> None:
    """Set every BN's statistics from its own input on `images`, then scale `classifier` so its logits have
    standard deviation `logit_std` (scores spread like a trained detector's, so detections pass the threshold).

    images: list of [3, H, W] normalized float32. One eval forward of the whole detector: a hook sets each BN's
    running mean/var to the mean/var of the batch it receives, just before it normalizes it, so every layer sees
    inputs normalized by the calibrated layers before it (trunk on the images, conv5_x on the pooled RoIs).
    The detector interface is all this needs, which is why it is used here rather than a classification-style
    recompute over the trunk alone.
    """
    hooks = [m.register_forward_pre_hook(_set_stats_from_input) for m in model.modules() if isinstance(m, _BN_TYPES)]
    seen: list[Tensor] = []
    if classifier is not None:
        hooks.append(classifier.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach())))
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if classifier is not None and seen:
        logits = torch.cat(seen) @ classifier.weight.t()
        classifier.weight.mul_(logit_std / logits.std().clamp(min=1e-12))


def _set_stats_from_input(module: nn.Module, args: tuple[Tensor, ...]) -> None:
    x = args[0].detach().float()
    module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
    module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))
