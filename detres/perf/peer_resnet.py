"""The peer's ResNet: detres's trunk and conv5_x rebuilt from torchvision's own blocks, with detres's weights.

The peer must not run detres's code (its blocks fold frozen BN into the convs in training, for one): each stage
is made of `torchvision.models.resnet.Bottleneck` / `BasicBlock`, shaped like detres's block (widths included, so
tiny test nets work) and loaded with its state dict (strict: same keys). It trains what detres trains: its norm
layer is `FrozenBatchNorm2d` where detres's BN is frozen, `nn.BatchNorm2d` where it is trained and `nn.GroupNorm`
where detres's is GroupNorm (model.backbone.norm=gn), and parameters
that detres freezes (the stem and conv2_x at model.backbone.freeze_at=2) are frozen in the peer too, as
torchvision's own `trainable_layers` would freeze them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from detres.modeling import resnet as detres_resnet


def torchvision_trunk(trunk: nn.Module) -> nn.Sequential:
    """conv1..conv4_x of torchvision modules (a Sequential returning the stride-16 map) equal to detres's trunk."""
    conv = trunk.conv1
    stem_conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                          padding=conv.padding, bias=False)
    stem_conv.load_state_dict(conv.state_dict())
    stem_bn = _norm_layer_like(trunk.bn1)(conv.out_channels)
    stem_bn.load_state_dict(trunk.bn1.state_dict())
    _copy_requires_grad(trunk.conv1, stem_conv)
    _copy_requires_grad(trunk.bn1, stem_bn)
    layers = OrderedDict(conv1=stem_conv, bn1=stem_bn, relu=nn.ReLU(inplace=True),
                         maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    for name in ("layer1", "layer2", "layer3"):
        layers[name] = torchvision_stage(getattr(trunk, name))
    return nn.Sequential(layers)


def torchvision_stage(stage: nn.Sequential) -> nn.Sequential:
    """A stage of detres blocks (B/C shortcuts, stride on the 3x3) as torchvision blocks with the same weights."""
    return nn.Sequential(*(_torchvision_block(block) for block in stage))


def _torchvision_block(block: nn.Module) -> nn.Module:
    if block.plain or isinstance(block.downsample, detres_resnet.ZeroPadShortcut):
        raise ValueError("the torchvision peer needs projection (B/C) shortcuts; plain nets and option A have no "
                         "torchvision block")
    bottleneck = isinstance(block, detres_resnet.Bottleneck)
    if bottleneck and block.conv1.stride != (1, 1):
        raise ValueError("the torchvision peer needs the stride on the 3x3 conv (model.backbone.stride_in_1x1=false)")
    norm_layer = _norm_layer_like(block.bn1)
    downsample = None
    if block.downsample is not None:
        proj = block.downsample[0]
        downsample = nn.Sequential(nn.Conv2d(proj.in_channels, proj.out_channels, 1, stride=proj.stride, bias=False),
                                   norm_layer(proj.out_channels))
    cls = Bottleneck if bottleneck else BasicBlock
    stride = block.conv2.stride[0] if bottleneck else block.conv1.stride[0]
    peer = cls(block.conv1.in_channels, block.conv1.out_channels, stride=stride, downsample=downsample,
               norm_layer=norm_layer)
    peer.load_state_dict(block.state_dict())  # strict: the same keys and shapes, or an error
    _copy_requires_grad(block, peer)
    return peer


def _norm_layer_like(bn: nn.Module) -> Callable[[int], nn.Module]:
    """torchvision's norm layer for a detres norm: frozen BN stays frozen, trained BN trained, GroupNorm GroupNorm."""
    if isinstance(bn, nn.GroupNorm):
        return _group_norm
    return FrozenBatchNorm2d if isinstance(bn, FrozenBatchNorm2d) else nn.BatchNorm2d


def _group_norm(channels: int) -> nn.Module:
    # torch's own GroupNorm with detres's group count: a GroupNorm state dict holds no group count, so a different
    # one would load silently and compute another function
    return nn.GroupNorm(detres_resnet.gn_groups(channels), channels)


def _copy_requires_grad(source: nn.Module, target: nn.Module) -> None:
    """Freeze in `target` the parameters frozen in `source` (the same names: the state dicts already match)."""
    frozen = {name for name, p in source.named_parameters() if not p.requires_grad}
    for name, param in target.named_parameters():
        param.requires_grad_(name not in frozen)
