"""Batch norm for detection: frozen BN, frozen early stages, BN folded into convs, BN statistics recomputed.

App. A: BN statistics are recomputed on the training set after classification pretraining and then kept
fixed while fine-tuning the detector; at inference a frozen BN is an affine map and folds into its conv.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d


def convert_to_frozen_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d (recursively) by a FrozenBatchNorm2d with the same statistics and affine."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = convert_to_frozen_bn(child)
        if new is not child:
            setattr(module, name, new)
    return module


def freeze_bn_of_parts(model: nn.Module, *, backbone_norm: str, head_norm: str) -> None:
    """Detection: FrozenBatchNorm2d (with the loaded statistics) where the config asks for frozen_bn, after loading
    the weights: the stem and layer1..layer3 when `backbone_norm` (model.backbone.norm) is frozen_bn, layer4
    (conv5_x) when `head_norm` (model.roi_head.norm, resolved) is. BN elsewhere trains; GroupNorm is left as it is."""
    parts = (["bn1", "layer1", "layer2", "layer3"] if backbone_norm == "frozen_bn" else []) + \
        (["layer4"] if head_norm == "frozen_bn" else [])
    for name in parts:
        if hasattr(model, name):
            setattr(model, name, convert_to_frozen_bn(getattr(model, name)))


def conv_bn(conv: nn.Conv2d, bn: nn.Module, x: Tensor) -> Tensor:
    """bn(conv(x)). In training, a FrozenBatchNorm2d is applied to the conv's weights instead of its output.

    A frozen BN is a fixed per-channel affine map, so conv(x, W * scale) + shift is the same function with the same
    gradient for W, but it skips three passes over the activation (forward multiply and add, backward multiply);
    in eval mode the plain order keeps outputs bit-identical to torchvision's modules (inference folds BN anyway).
    """
    if not (conv.training and isinstance(bn, FrozenBatchNorm2d)):
        return bn(conv(x))
    scale, shift = _bn_scale_shift(bn)
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def freeze_stages(model: nn.Module, freeze_at: int) -> None:
    """Stop gradients of the stem (freeze_at >= 1) and of layer1..layer{freeze_at-1} (freeze_at >= 2)."""
    frozen: list[nn.Module] = []
    if freeze_at >= 1:
        frozen += [model.conv1, model.bn1]
    frozen += [getattr(model, f"layer{i}") for i in range(1, freeze_at) if hasattr(model, f"layer{i}")]
    for part in frozen:
        for param in part.parameters():
            param.requires_grad_(False)


def _bn_scale_shift(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """y = x * scale + shift for an eval-mode (Frozen)BatchNorm2d."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _fold(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    scale, shift = _bn_scale_shift(bn)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                      padding_mode=conv.padding_mode).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        fused.bias.copy_(bias * scale + shift)
    return fused


_BN_TYPES = (nn.BatchNorm2d, FrozenBatchNorm2d)


def fold_frozen_bn(module: nn.Module) -> nn.Module:
    """Inference only: fold each BN into the conv it follows (attribute pairs convN/bnN and Sequential pairs).

    The BN is replaced by Identity, so forward code stays unchanged. Same outputs as before to ~1e-5. GroupNorm
    (model.backbone.norm=gn) normalizes with each image's own statistics, so it is no fixed affine map: it stays.
    """
    for name, child in list(module.named_children()):
        fold_frozen_bn(child)
        if isinstance(child, nn.Conv2d):
            bn_name = "bn" + name[len("conv"):] if name.startswith("conv") else None
            bn = getattr(module, bn_name, None) if bn_name else None
            if isinstance(bn, _BN_TYPES):
                setattr(module, name, _fold(child, bn))
                setattr(module, bn_name, nn.Identity())
    if isinstance(module, nn.Sequential):
        items = list(module._modules.items())
        for (name, child), (next_name, nxt) in zip(items, items[1:]):
            if isinstance(child, nn.Conv2d) and isinstance(nxt, _BN_TYPES):
                module._modules[name] = _fold(child, nxt)
                module._modules[next_name] = nn.Identity()
    return module


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable[Tensor], num_batches: int) -> None:
    """Set every BatchNorm2d's running mean/var to population statistics over `num_batches` batches.

    Not a running average: each layer's mean is the average of per-batch means and its variance the average
    E[x^2] minus the squared mean, over all pixels of all batches (as the paper recomputes them, App. A).
    Layers are measured in one pass with forward hooks, in train mode: every layer normalizes with its batch's
    statistics, so a deep layer's input does not depend on the (possibly meaningless) stored statistics above it.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    sums = {bn: [0.0, 0.0, 0] for bn in bns}

    def hook(bn, inputs, _output):
        x = inputs[0].detach().double()
        dims = [0, 2, 3]
        count = x.numel() // x.shape[1]
        sums[bn][0] = sums[bn][0] + x.sum(dims)
        sums[bn][1] = sums[bn][1] + (x * x).sum(dims)
        sums[bn][2] += count

    was_training = model.training
    handles = [bn.register_forward_hook(hook) for bn in bns]
    model.train()
    seen = 0
    try:
        for batch in batches:
            if seen >= num_batches:
                break
            model(batch)
            seen += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for bn, (s, sq, n) in sums.items():
        if n == 0:
            continue
        mean = s / n
        var = sq / n - mean * mean
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.clamp(min=0).to(bn.running_var.dtype))
        bn.num_batches_tracked.zero_()
