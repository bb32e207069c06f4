"""Builders for the localization models: the only code in detres.localization that reads the Config."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from detres.boxes import BoxCoder
from detres.config import Config
from detres.errors import ConfigError
from detres.localization.per_class_rpn import LocRPNPredictor, PerClassRPN
from detres.localization.rcnn import LocRCNN
from detres.modeling.anchors import AnchorGenerator
from detres.modeling.batchnorm import convert_to_frozen_bn, freeze_stages
from detres.modeling.resnet import build_resnet, split_c4
from detres.modeling.weights import load_resnet_weights

STAGE_STRIDES = {4: 16, 5: 32}


def build_loc_body(cfg: Config, *, stage: int) -> tuple[nn.Module, int]:
    """The pretrained classification ResNet cut after conv`stage`_x (4: conv1..conv4_x, stride 16; 5: through
    conv5_x, stride 32), with cfg.model.backbone's weights, frozen BN and frozen stages. Returns (body, channels)."""
    if stage not in STAGE_STRIDES:
        raise ConfigError(f"loc.feature_stage={stage} is not supported; use 4 (conv4_x) or 5 (conv5_x)")
    bb = cfg.model.backbone
    resnet = build_resnet(bb, cfg.model.num_classes)
    if bb.weights:
        load_resnet_weights(resnet, bb.weights, skip_fc=True)
    if bb.norm == "frozen_bn":
        resnet = convert_to_frozen_bn(resnet)
    freeze_stages(resnet, bb.freeze_at)
    trunk, head = split_c4(resnet)
    if stage == 4:
        return trunk, resnet.stage_channels[2]
    return nn.Sequential(trunk, head), resnet.stage_channels[3]


def build_per_class_rpn(cfg: Config) -> LocRPNPredictor:
    """PerClassRPN on loc.feature_stage with the detector's anchors (model.rpn.anchor_sizes / aspect_ratios)."""
    stage = cfg.loc.feature_stage
    body, channels = build_loc_body(cfg, stage=stage)
    anchors = AnchorGenerator(sizes=list(cfg.model.rpn.anchor_sizes), aspect_ratios=list(cfg.model.rpn.aspect_ratios),
                              stride=STAGE_STRIDES[stage])
    model = PerClassRPN(body=body, in_channels=channels, head_channels=cfg.model.rpn.head_channels or channels,
                        num_classes=cfg.model.num_classes, num_anchors=anchors.num_anchors)
    return LocRPNPredictor(model=model, anchor_generator=anchors, coder=BoxCoder(weights=(1.0, 1.0, 1.0, 1.0)))


def build_loc_rcnn(cfg: Config) -> tuple[LocRCNN, BoxCoder]:
    """The R-CNN: a ResNet through conv5_x + global average pool + sibling fc `cls` (C+1) / `reg` (C x 4)."""
    body, channels = build_loc_body(cfg, stage=5)
    model = LocRCNN(body=body, feat_channels=channels, num_classes=cfg.model.num_classes)
    return model, BoxCoder(weights=tuple(cfg.model.roi_head.box_reg_weights))


def stage_dir(cfg: Config, stage: str) -> Path:
    """Where a stage's run lives: <output.dir>/rpn or <output.dir>/rcnn."""
    return Path(cfg.output.dir) / stage


def rpn_checkpoint_path(cfg: Config) -> Path:
    return Path(cfg.loc.rpn_ckpt) if cfg.loc.rpn_ckpt else stage_dir(cfg, "rpn") / "model_final.pth"


def rcnn_checkpoint_path(cfg: Config) -> Path:
    return Path(cfg.loc.rcnn_ckpt) if cfg.loc.rcnn_ckpt else stage_dir(cfg, "rcnn") / "model_final.pth"
