"""Faster R-CNN on a ResNet C4 backbone (the paper's App. A); `build_faster_rcnn` is the only reader of cfg."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detres.boxes import BoxCoder
from detres.config import Config
from detres.data.batching import pad_images
from detres.errors import ConfigError
from detres.modeling.anchors import AnchorGenerator
from detres.modeling.batchnorm import freeze_bn_of_parts, freeze_stages, recompute_bn_stats
from detres.modeling.matching import Matcher
from detres.modeling.resnet import build_resnet, split_c4
from detres.modeling.roi_heads import BoxPredictor, C4RoIHead
from detres.modeling.rpn import RPN, RPNHead
from detres.modeling.weights import load_resnet_weights

TRUNK_STRIDE = 16
TRAINED_PARTS = ("joint", "rpn", "rcnn")  # what a training forward computes losses for (step-wise training)


@dataclass
class Intermediates:
    """What one inference pass computed before NMS, for App. B options and benchmarks to reuse."""

    features: Tensor  # [B, C, H, W] conv4_x of the padded batch
    image_sizes: list[tuple[int, int]]  # unpadded (h, w) of each input image
    proposals: list[Tensor]  # B x [K, 4]
    per_image: list[tuple[Tensor, Tensor]]  # B x (scores [K, C+1], boxes [K, C+1, 4])


class FasterRCNN(nn.Module):
    """trunk (conv1..conv4_x) -> RPN -> C4 RoI head. Images: list of [3, H, W] normalized tensors.

    Train mode returns the losses dict; eval mode a list of dict(boxes, scores, labels) per image, in the
    pixels of the images as given.
    """

    def __init__(self, *, trunk: nn.Module, rpn: RPN, roi_head: C4RoIHead, size_divisibility: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.rpn = rpn
        self.roi_head = roi_head
        self.size_divisibility = size_divisibility
        self.trains = "joint"  # joint: RPN + Fast R-CNN losses | rpn: RPN losses | rcnn: Fast R-CNN on given proposals
        self.fixed: tuple[str, ...] = ()  # parts (trunk, rpn, roi_head) with no gradient and BN in eval mode

    def set_training_step(self, *, trains: str, fixed: tuple[str, ...] = ()) -> None:
        """Step-wise training (Ren et al. 2015): which losses the training forward returns, and which parts stay
        fixed. The part a step does not use is fixed too (no gradient, so DDP sees no unused parameter). `rcnn`
        takes each image's proposals from its target dict (`target["proposals"]`, [K, 4] input pixels)."""
        if trains not in TRAINED_PARTS:
            raise ValueError(f"trains must be one of {TRAINED_PARTS}, got {trains!r}")
        unused = {"joint": (), "rpn": ("roi_head",), "rcnn": ("rpn",)}[trains]
        self.trains = trains
        self.fixed = tuple(dict.fromkeys((*fixed, *unused)))
        for name in self.fixed:
            getattr(self, name).requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> FasterRCNN:
        """As nn.Module.train; fixed parts stay in eval mode (trained BN in them keeps its statistics)."""
        super().train(mode)
        for name in self.fixed:
            getattr(self, name).eval()
        return self

    def backbone(self, images: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Pad the images into one batch and run the trunk: ([B, C, H/16, W/16], unpadded sizes)."""
        batch, sizes = pad_images(images, self.size_divisibility)
        return self.trunk(batch), sizes

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("FasterRCNN in training mode needs targets")
            features, sizes = self.backbone(images)
            if self.trains == "rcnn":  # Fast R-CNN step: the proposals of the previous RPN, computed once
                return self.roi_head.losses(features, [t["proposals"] for t in targets], targets, sizes)
            if self.trains == "rpn":  # RPN step: anchor losses only, no proposals needed
                objectness, deltas, anchors = self.rpn.head_outputs(features)
                return self.rpn.losses(objectness, deltas, anchors, sizes, targets)
            proposals, losses = self.rpn(features, sizes, targets)
            losses.update(self.roi_head.losses(features, proposals, targets, sizes))
            return losses
        return self.roi_head.detect(self.inference_intermediates(images).per_image)

    def inference_intermediates(self, images: list[Tensor]) -> Intermediates:
        """Features, proposals and per-RoI scores/boxes before NMS (eval mode)."""
        features, sizes = self.backbone(images)
        proposals, _ = self.rpn(features, sizes)
        return Intermediates(features, sizes, proposals, self.roi_head.predict_boxes(features, proposals, sizes))


    @torch.no_grad()
    def propose(self, images: list[Tensor], topk: tuple[int, int] | None = None) -> list[Tensor]:
        """The RPN's proposals B x [K, 4] (input pixels) in the current mode; topk (pre-NMS, post-NMS) overrides
        the mode's counts (step-wise training stores the training counts' proposals from the eval-mode RPN)."""
        features, sizes = self.backbone(images)
        objectness, deltas, anchors = self.rpn.head_outputs(features)
        return self.rpn.propose(objectness, deltas, anchors, sizes, topk)


def build_faster_rcnn(cfg: Config, *, calibration_images: Iterable[Tensor] | None = None,
                      calibration_batches: int = 0) -> FasterRCNN:
    """The C4 detector of the config. Backbone from `model.backbone.weights` (torchvision or detres file),

    or, with no weights, from scratch: if `calibration_images` (batches [B,3,H,W]) are given, BN statistics
    are first recomputed on them (App. A) so frozen BN holds meaningful statistics.
    """
    mc, bb = cfg.model, cfg.model.backbone
    if mc.num_classes < 1:
        raise ConfigError(f"model.num_classes must be >= 1, got {mc.num_classes}")
    resnet = build_resnet(bb, num_classes=1000, head_norm=mc.roi_head.norm)
    if bb.weights:
        load_resnet_weights(resnet, bb.weights, skip_fc=True)
    elif calibration_images is not None and calibration_batches > 0:
        recompute_bn_stats(resnet, calibration_images, calibration_batches)
    resnet.fc = nn.Identity()  # the classifier is not part of the detector
    freeze_bn_of_parts(resnet, backbone_norm=bb.norm, head_norm=mc.roi_head.norm or bb.norm)
    freeze_stages(resnet, bb.freeze_at)
    trunk, res5 = split_c4(resnet)
    trunk_channels, head_channels = resnet.stage_channels[2], resnet.stage_channels[3]
    return FasterRCNN(trunk=trunk, rpn=_build_rpn(cfg, trunk_channels),
                      roi_head=_build_roi_head(cfg, res5, head_channels),
                      size_divisibility=cfg.data.input.size_divisibility)


def _build_rpn(cfg: Config, in_channels: int) -> RPN:
    rc = cfg.model.rpn
    anchors = AnchorGenerator(sizes=rc.anchor_sizes, aspect_ratios=rc.aspect_ratios, stride=TRUNK_STRIDE)
    head = RPNHead(in_channels=in_channels, mid_channels=rc.head_channels or in_channels,
                   num_anchors=anchors.num_anchors)
    return RPN(head=head, anchor_generator=anchors,
               matcher=Matcher(high=rc.fg_iou_thresh, low=rc.bg_iou_thresh, allow_low_quality=True),
               box_coder=BoxCoder(weights=(1.0, 1.0, 1.0, 1.0)),
               batch_size_per_image=rc.batch_size_per_image, positive_fraction=rc.positive_fraction,
               pre_nms_topk=(rc.pre_nms_topk_train, rc.pre_nms_topk_test),
               post_nms_topk=(rc.post_nms_topk_train, rc.post_nms_topk_test), nms_thresh=rc.nms_thresh,
               min_box_size=rc.min_box_size, ignore_cross_boundary=rc.ignore_cross_boundary,
               smooth_l1_beta=rc.smooth_l1_beta)


def _build_roi_head(cfg: Config, res5: nn.Module, head_channels: int) -> C4RoIHead:
    hc, tc = cfg.model.roi_head, cfg.test
    if len(hc.box_reg_weights) != 4:
        raise ConfigError(f"model.roi_head.box_reg_weights needs 4 values, got {hc.box_reg_weights}")
    return C4RoIHead(
        res5=res5, context=hc.context,
        predictor=BoxPredictor(in_features=head_channels * (2 if hc.context else 1), num_classes=cfg.model.num_classes),
        box_coder=BoxCoder(weights=tuple(hc.box_reg_weights)),
        matcher=Matcher(high=hc.fg_iou_thresh, low=hc.bg_iou_thresh_hi, allow_low_quality=False),
        pooler=hc.pooler, resolution=hc.pooler_resolution, spatial_scale=1.0 / TRUNK_STRIDE,
        sampling_ratio=hc.sampling_ratio, batch_size_per_image=hc.batch_size_per_image,
        positive_fraction=hc.positive_fraction, bg_iou_thresh_lo=hc.bg_iou_thresh_lo,
        smooth_l1_beta=hc.smooth_l1_beta, score_thresh=tc.score_thresh, nms_thresh=tc.nms_thresh,
        detections_per_img=tc.detections_per_img, chunk_size=hc.chunk_size)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["FasterRCNN", "Intermediates", "build_faster_rcnn", "trainable_parameters", "torch"]
