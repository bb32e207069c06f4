"""The benchmark's peer built from a detres FasterRCNN: torchvision's FasterRCNN computing the same function.

Only this file knows detres's module names; `peer_parts.assemble_peer` knows torchvision's.
"""

from __future__ import annotations

from torchvision.models.detection import FasterRCNN

from detres.config import Config
from detres.modeling.faster_rcnn import FasterRCNN as DetresFasterRCNN
from detres.perf.peer_parts import PeerParts, PeerSettings, assemble_peer
from detres.perf.peer_resnet import torchvision_stage, torchvision_trunk


def build_peer(model: DetresFasterRCNN, cfg: Config) -> FasterRCNN:
    """torchvision FasterRCNN (C4) with copies of `model`'s weights and the settings of `cfg`; its ResNet is made
    of torchvision's own blocks (detres.perf.peer_resnet), so no detres code runs inside the peer.

    model: detres's detector built from `cfg` (weights loaded or calibrated). The peer is in train mode like any
    new module; call `.eval()` for inference.
    """
    rpn, head = model.rpn, model.roi_head
    parts = PeerParts(
        trunk=torchvision_trunk(model.trunk),
        trunk_channels=rpn.head.conv.in_channels,
        head=torchvision_stage(head.res5),
        head_channels=head.predictor.cls_score.in_features,
        rpn_conv=rpn.head.conv,
        rpn_cls=rpn.head.cls_logits,
        rpn_box=rpn.head.bbox_pred,
        # detres's anchors already follow torchvision's convention; taking them as they are keeps it so.
        cell_anchors=rpn.anchor_generator.cell_anchors,
        cls_score=head.predictor.cls_score,
        bbox_pred=head.predictor.bbox_pred,
    )
    return assemble_peer(parts, peer_settings(cfg))


def peer_settings(cfg: Config) -> PeerSettings:
    """The non-weight settings of `cfg` in the peer's terms."""
    rc, hc, tc = cfg.model.rpn, cfg.model.roi_head, cfg.test
    return PeerSettings(
        num_classes=cfg.model.num_classes,
        pooler=hc.pooler,
        pooler_resolution=hc.pooler_resolution,
        sampling_ratio=hc.sampling_ratio,
        roi_align_aligned=True,  # detres's C4RoIHead pools with aligned=True
        size_divisibility=cfg.data.input.size_divisibility,
        rpn_pre_nms_topk_train=rc.pre_nms_topk_train,
        rpn_pre_nms_topk_test=rc.pre_nms_topk_test,
        rpn_post_nms_topk_train=rc.post_nms_topk_train,
        rpn_post_nms_topk_test=rc.post_nms_topk_test,
        rpn_nms_thresh=rc.nms_thresh,
        rpn_min_size=max(rc.min_box_size, 1e-3),  # detres's RPN drops boxes below this side
        rpn_fg_iou_thresh=rc.fg_iou_thresh,
        rpn_bg_iou_thresh=rc.bg_iou_thresh,
        rpn_batch_size_per_image=rc.batch_size_per_image,
        rpn_positive_fraction=rc.positive_fraction,
        roi_batch_size_per_image=hc.batch_size_per_image,
        roi_positive_fraction=hc.positive_fraction,
        roi_fg_iou_thresh=hc.fg_iou_thresh,
        roi_bg_iou_thresh=hc.bg_iou_thresh_hi,
        box_reg_weights=tuple(hc.box_reg_weights),
        score_thresh=tc.score_thresh,
        nms_thresh=tc.nms_thresh,
        detections_per_img=tc.detections_per_img,
    )


def output_layers(model: DetresFasterRCNN) -> dict[str, object]:
    """detres's output layers by role, for calibration: RPN logits and deltas, class logits and box deltas."""
    return {"rpn_cls": model.rpn.head.cls_logits, "rpn_box": model.rpn.head.bbox_pred,
            "cls_score": model.roi_head.predictor.cls_score, "bbox_pred": model.roi_head.predictor.bbox_pred}
