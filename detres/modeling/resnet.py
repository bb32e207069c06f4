"""The ResNet family of the paper (Table 1, Sec. 3.3 and 4.2), with torchvision's module and parameter names.

Names equal torchvision's (`conv1`, `bn1`, `layer1`..`layer4`, `fc`, `downsample`), so a torchvision state dict
loads with strict=True. Options the paper studies and torchvision lacks: plain nets (no shortcuts), shortcut
options A/B/C, the stride on the first 1x1 conv (the original MSRA layout), a width multiplier for tiny test
nets, and the CIFAR 6n+2 nets. The normalization is BatchNorm (frozen later for detection) or GroupNorm (for
training from scratch); either sits under the same `bn*` names, so the keys of a GN net are BN's minus the statistics.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detres.config import BackboneConfig
from detres.errors import ConfigError
from detres.modeling.batchnorm import conv_bn

# Table 1: blocks per stage for each depth, and whether the block is a bottleneck.
IMAGENET_STAGES = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}
SHORTCUT_OPTIONS = ("A", "B", "C")
# model.backbone.norm / model.roi_head.norm. frozen_bn builds BatchNorm2d here: detection builders freeze it after the
# weights are loaded (detres.modeling.batchnorm.freeze_bn_of_parts)
NORMS = ("frozen_bn", "bn", "gn")
GN_GROUPS = 32  # Wu and He 2018; the scratch configs of He, Girshick and Dollar 2019


def gn_groups(channels: int) -> int:
    """32 groups, or the largest divisor of `channels` below 32 in the tiny test nets (e.g. 16 channels: 16 groups)."""
    return max(g for g in range(1, GN_GROUPS + 1) if channels % g == 0)


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The normalization module of `norm` (one of NORMS) over `channels` channels."""
    if norm == "gn":
        return nn.GroupNorm(gn_groups(channels), channels)
    return nn.BatchNorm2d(channels)


def check_norm(norm: str, key: str) -> None:
    if norm not in NORMS:
        raise ConfigError(f"{key}={norm!r} is not one of {', '.join(NORMS)} (gn: GroupNorm, for training from "
                          "scratch; frozen_bn: the paper's detection default)")


class ZeroPadShortcut(nn.Module):
    """Option A: identity with stride-2 subsampling and zero-padded extra channels; no parameters."""

    def __init__(self, *, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - x.shape[1]
        return F.pad(x, (0, 0, 0, 0, 0, extra)) if extra > 0 else x


class Projection(nn.Sequential):
    """Options B/C: 1x1 conv + BN (torchvision's `downsample` keys `0.*` and `1.*`), through `conv_bn`."""

    def forward(self, x: Tensor) -> Tensor:
        return conv_bn(self[0], self[1], x)


def _shortcut(option: str, in_ch: int, out_ch: int, stride: int, plain: bool, norm: str) -> nn.Module | None:
    """The `downsample` module of a block: None for an identity shortcut or a plain net."""
    if plain:
        return None
    changes = stride != 1 or in_ch != out_ch
    if option == "C" or (option == "B" and changes):
        return Projection(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), norm_layer(norm, out_ch))
    if option == "A" and changes:
        return ZeroPadShortcut(out_channels=out_ch, stride=stride)
    return None


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR nets)."""

    expansion = 1

    def __init__(self, *, in_ch: int, width: int, stride: int, shortcut: str, plain: bool,
                 stride_in_1x1: bool = False, norm: str = "bn") -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = norm_layer(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(shortcut, in_ch, out_ch, stride, plain, norm)
        self.plain = plain

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(conv_bn(self.conv1, self.bn1, x))
        out = conv_bn(self.conv2, self.bn2, out)
        if not self.plain:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4). The stride sits on the 3x3 (torchvision) or the first 1x1 (MSRA)."""

    expansion = 4

    def __init__(self, *, in_ch: int, width: int, stride: int, shortcut: str, plain: bool,
                 stride_in_1x1: bool = False, norm: str = "bn") -> None:
        super().__init__()
        out_ch = width * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_ch, width, 1, stride=s1, bias=False)
        self.bn1 = norm_layer(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=s3, padding=1, bias=False)
        self.bn2 = norm_layer(norm, width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = norm_layer(norm, out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(shortcut, in_ch, out_ch, stride, plain, norm)
        self.plain = plain

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(conv_bn(self.conv1, self.bn1, x))
        out = self.relu(conv_bn(self.conv2, self.bn2, out))
        out = conv_bn(self.conv3, self.bn3, out)
        if not self.plain:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class ResNet(nn.Module):
    """ImageNet ResNet (stem 7x7/2 + 3x3 max pool, four stages) or CIFAR ResNet (3x3 stem, three stages).

    stage_channels: output channels of layer1..layer4 (layer4 absent for CIFAR nets). norm: "bn" or "gn" (NORMS;
    frozen_bn builds BN) for every layer; head_norm: the last stage's instead (conv5_x, the C4 detector's head).
    """

    def __init__(self, *, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, ...], num_classes: int = 1000,
                 width: int = 64, shortcut: str = "B", plain: bool = False, stride_in_1x1: bool = False,
                 cifar: bool = False, norm: str = "bn", head_norm: str = "") -> None:
        super().__init__()
        check_norm(norm, "norm")
        check_norm(head_norm or norm, "head_norm")
        if shortcut not in SHORTCUT_OPTIONS:
            raise ConfigError(f"shortcut option {shortcut!r} is not one of A, B, C")
        self.cifar = cifar
        if cifar:  # Sec. 4.2: 3x3 conv on 32x32 inputs, then stages of 16, 32, 64 filters (width=16)
            self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, stride=2, padding=1)
        in_ch, self.stage_channels = width, []
        for index, blocks in enumerate(layers):
            stage_width = width * 2**index
            stride = 1 if index == 0 else 2
            stage = []
            stage_norm = (head_norm or norm) if index == len(layers) - 1 else norm
            for b in range(blocks):
                stage.append(block(in_ch=in_ch, width=stage_width, stride=stride if b == 0 else 1,
                                   shortcut=shortcut, plain=plain, stride_in_1x1=stride_in_1x1, norm=stage_norm))
                in_ch = stage_width * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
            self.stage_channels.append(in_ch)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He et al. 2015 ("msra") initialization, as the paper uses
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.stage_channels))]

    def forward_features(self, x: Tensor) -> Tensor:
        """Image [B,3,H,W] -> last stage's map [B, stage_channels[-1], H/32, W/32] (H/4 for CIFAR)."""
        x = self.maxpool(self.relu(conv_bn(self.conv1, self.bn1, x)))
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Image [B,3,H,W] -> class logits [B, num_classes]."""
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


def _imagenet_resnet(depth: int, **kwargs) -> ResNet:
    if depth not in IMAGENET_STAGES:
        raise ConfigError(f"ResNet depth {depth} is not one of {sorted(IMAGENET_STAGES)} (or set cifar=True)")
    layers, bottleneck = IMAGENET_STAGES[depth]
    return ResNet(block=Bottleneck if bottleneck else BasicBlock, layers=layers, **kwargs)


def resnet18(**kwargs) -> ResNet:
    return _imagenet_resnet(18, **kwargs)


def resnet34(**kwargs) -> ResNet:
    return _imagenet_resnet(34, **kwargs)


def resnet50(**kwargs) -> ResNet:
    return _imagenet_resnet(50, **kwargs)


def resnet101(**kwargs) -> ResNet:
    return _imagenet_resnet(101, **kwargs)


def resnet152(**kwargs) -> ResNet:
    return _imagenet_resnet(152, **kwargs)


def cifar_resnet(depth: int, *, num_classes: int = 10, width: int = 16, shortcut: str = "A",
                 plain: bool = False, norm: str = "bn") -> ResNet:
    """The 6n+2-layer CIFAR nets of Sec. 4.2 (20, 32, 44, 56, 110, 1202): three stages of n basic blocks."""
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, 1202), got {depth}")
    n = (depth - 2) // 6
    return ResNet(block=BasicBlock, layers=(n, n, n), num_classes=num_classes, width=width,
                  shortcut=shortcut, plain=plain, cifar=True, norm=norm)


def build_resnet(cfg: BackboneConfig, num_classes: int, *, head_norm: str = "") -> ResNet:
    """The ResNet the config describes (weights are loaded separately, see detres.modeling.weights).

    Norms come from `cfg.norm` (frozen_bn builds BN, frozen by the detection builder after the weights load);
    `head_norm` (model.roi_head.norm, "" = cfg.norm) is conv5_x's.
    """
    check_norm(cfg.norm, "model.backbone.norm")
    check_norm(head_norm or cfg.norm, "model.roi_head.norm")
    norm, head = _module_norm(cfg.norm), _module_norm(head_norm or cfg.norm)
    if cfg.cifar:
        return cifar_resnet(cfg.depth, num_classes=num_classes, width=cfg.width, shortcut=cfg.shortcut,
                            plain=cfg.plain, norm=norm)
    return _imagenet_resnet(cfg.depth, num_classes=num_classes, width=cfg.width, shortcut=cfg.shortcut,
                            plain=cfg.plain, stride_in_1x1=cfg.stride_in_1x1, norm=norm, head_norm=head)


def _module_norm(norm: str) -> str:
    return "gn" if norm == "gn" else "bn"


def split_c4(model: ResNet) -> tuple[nn.Sequential, nn.Sequential]:
    """Split into the detection trunk (conv1..conv4_x, stride 16) and the head stage (conv5_x, stride 2).

    The modules are shared with `model`, not copied; names inside keep torchvision's keys.
    """
    if model.cifar:
        raise ConfigError("the C4 split needs an ImageNet ResNet (four stages); got a CIFAR net")
    trunk = C4Trunk(OrderedDict(
        conv1=model.conv1, bn1=model.bn1, relu=model.relu, maxpool=model.maxpool,
        layer1=model.layer1, layer2=model.layer2, layer3=model.layer3,
    ))
    return trunk, model.layer4


class C4Trunk(nn.Sequential):
    """conv1..conv4_x as a Sequential (torchvision's keys), with the stem's conv and BN through `conv_bn`."""

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(conv_bn(self.conv1, self.bn1, x)))
        return self.layer3(self.layer2(self.layer1(x)))
