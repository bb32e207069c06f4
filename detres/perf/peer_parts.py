"""torchvision's own FasterRCNN assembled as a C4 detector from given modules: the benchmark's peer.

The peer computes the same function as detres when it receives detres's weights (see `detres.perf.peer`):
trunk conv1..conv4_x as its backbone, RoI pooling on the stride-16 map, conv5_x + global average pooling as
its box head, the sibling layers as its FastRCNNPredictor. Its image transform is made a no-op apart from
batching, because detres's images arrive already resized and normalized.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, roi_align, roi_pool


class C4RoIPooler(MultiScaleRoIAlign):
    """RoI pooling of the single stride-16 map, as detres pools (torchvision's RoIHeads insists on this base type).

    pooler: "roi_pool" (max pooling, the paper) or "roi_align"; resolution: output bins per side.
    """

    def __init__(self, *, pooler: str, resolution: int, spatial_scale: float, sampling_ratio: int,
                 aligned: bool) -> None:
        super().__init__(featmap_names=["0"], output_size=resolution, sampling_ratio=sampling_ratio)
        self.pooler = pooler
        self.resolution = resolution
        self.spatial_scale = spatial_scale
        self.aligned = aligned

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        """x["0"]: [B, C, H/16, W/16]; boxes: per image [R_i, 4] XYXY image pixels -> [sum R_i, C, res, res]."""
        feature = x["0"]
        boxes = [b.to(feature.dtype) for b in boxes]
        size = (self.resolution, self.resolution)
        if self.pooler == "roi_pool":
            return roi_pool(feature, boxes, size, self.spatial_scale)
        return roi_align(feature, boxes, size, self.spatial_scale, self.sampling_ratio, aligned=self.aligned)


class PassThroughTransform(GeneralizedRCNNTransform):
    """GeneralizedRCNNTransform without resizing (scale 1 would be a costly no-op) and with mean 0 / std 1."""

    def __init__(self, *, size_divisibility: int) -> None:
        super().__init__(min_size=1, max_size=1, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
                         size_divisible=size_divisibility)

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        return image, target


@dataclass
class PeerParts:
    """The modules and numbers the peer is assembled from (copied, so the peer never shares detres's tensors).

    cell_anchors: [A, 4] XYXY anchors of the feature cell at (0, 0), in image pixels, in the order of the RPN's
    output channels; rpn_cls: a 1x1 conv with A sigmoid logits; rpn_box: a 1x1 conv with A*4 deltas ordered
    (anchor, delta); bbox_pred: a Linear with (C+1)*4 outputs, the background's 4 first.
    """

    trunk: nn.Module
    trunk_channels: int
    head: nn.Module
    head_channels: int
    rpn_conv: nn.Conv2d
    rpn_cls: nn.Conv2d
    rpn_box: nn.Conv2d
    cell_anchors: Tensor
    cls_score: nn.Linear
    bbox_pred: nn.Linear


@dataclass
class PeerSettings:
    """Everything besides weights that must equal detres's for the two detectors to compute the same function."""

    num_classes: int  # foreground classes C
    pooler: str
    pooler_resolution: int
    sampling_ratio: int
    roi_align_aligned: bool
    size_divisibility: int
    rpn_pre_nms_topk_train: int
    rpn_pre_nms_topk_test: int
    rpn_post_nms_topk_train: int
    rpn_post_nms_topk_test: int
    rpn_nms_thresh: float
    rpn_min_size: float
    rpn_fg_iou_thresh: float
    rpn_bg_iou_thresh: float
    rpn_batch_size_per_image: int
    rpn_positive_fraction: float
    roi_batch_size_per_image: int
    roi_positive_fraction: float
    roi_fg_iou_thresh: float
    roi_bg_iou_thresh: float
    box_reg_weights: tuple[float, float, float, float]
    score_thresh: float
    nms_thresh: float
    detections_per_img: int


def assemble_peer(parts: PeerParts, settings: PeerSettings) -> FasterRCNN:
    """torchvision FasterRCNN (C4) from copies of `parts`, configured by `settings`."""
    parts = copy.deepcopy(parts)
    backbone = parts.trunk
    backbone.out_channels = parts.trunk_channels

    num_anchors = len(parts.cell_anchors)
    anchor_generator = AnchorGenerator(sizes=((1.0,) * num_anchors,), aspect_ratios=((1.0,),))
    # Use detres's own cell anchors (its rounding, centre offset and order) rather than torchvision's rounded ones.
    anchor_generator.cell_anchors = [parts.cell_anchors.clone().float()]
    rpn_head = RPNHead(parts.trunk_channels, num_anchors)
    # torchvision's RPNHead is conv(3x3)+ReLU, cls_logits, bbox_pred; detres's layers take their places as they
    # are (this also covers an RPN conv narrower than the trunk, which RPNHead's constructor cannot express).
    rpn_head.conv[0][0] = parts.rpn_conv
    rpn_head.cls_logits = parts.rpn_cls
    rpn_head.bbox_pred = parts.rpn_box

    predictor = FastRCNNPredictor(parts.head_channels, settings.num_classes + 1)
    with torch.no_grad():
        predictor.cls_score.weight.copy_(parts.cls_score.weight)
        predictor.cls_score.bias.copy_(parts.cls_score.bias)
        predictor.bbox_pred.weight.copy_(parts.bbox_pred.weight)
        predictor.bbox_pred.bias.copy_(parts.bbox_pred.bias)

    box_head = nn.Sequential(parts.head, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    pooler = C4RoIPooler(pooler=settings.pooler, resolution=settings.pooler_resolution, spatial_scale=1.0 / 16,
                         sampling_ratio=settings.sampling_ratio, aligned=settings.roi_align_aligned)
    peer = FasterRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchor_generator,
        rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=settings.rpn_pre_nms_topk_train,
        rpn_pre_nms_top_n_test=settings.rpn_pre_nms_topk_test,
        rpn_post_nms_top_n_train=settings.rpn_post_nms_topk_train,
        rpn_post_nms_top_n_test=settings.rpn_post_nms_topk_test,
        rpn_nms_thresh=settings.rpn_nms_thresh,
        rpn_fg_iou_thresh=settings.rpn_fg_iou_thresh,
        rpn_bg_iou_thresh=settings.rpn_bg_iou_thresh,
        rpn_batch_size_per_image=settings.rpn_batch_size_per_image,
        rpn_positive_fraction=settings.rpn_positive_fraction,
        box_roi_pool=pooler,
        box_head=box_head,
        box_predictor=predictor,
        box_score_thresh=settings.score_thresh,
        box_nms_thresh=settings.nms_thresh,
        box_detections_per_img=settings.detections_per_img,
        box_fg_iou_thresh=settings.roi_fg_iou_thresh,
        box_bg_iou_thresh=settings.roi_bg_iou_thresh,
        box_batch_size_per_image=settings.roi_batch_size_per_image,
        box_positive_fraction=settings.roi_positive_fraction,
        bbox_reg_weights=settings.box_reg_weights,
    )
    peer.rpn.min_size = settings.rpn_min_size
    peer.transform = PassThroughTransform(size_divisibility=settings.size_divisibility)
    return peer
