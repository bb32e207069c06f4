"""The benchmark's peer (torchvision FasterRCNN built from detres's weights) computes detres's function."""

import pytest
import torch

from detres.config import load_config
from detres.modeling.faster_rcnn import build_faster_rcnn
from detres.perf.agreement import compare_detections
from detres.perf.bench import calibrate_benchmark_model
from detres.perf.peer import build_peer
from detres.perf.synthetic import synthetic_batch

TINY = ["model.backbone.depth=50", "model.backbone.width=8", "model.num_classes=3",
        "model.rpn.post_nms_topk_test=60", "model.rpn.pre_nms_topk_test=600"]


def _tiny_detector(overrides):
    cfg = load_config(None, TINY + overrides)
    model = build_faster_rcnn(cfg)
    images, targets = synthetic_batch(3, height=128, width=176, num_classes=3, pixel_mean=[0.485, 0.456, 0.406],
                                      pixel_std=[0.229, 0.224, 0.225], seed=0)
    calibrate_benchmark_model(model, images[:2])
    return cfg, model.eval(), images, targets


GN = ["model.backbone.norm=gn", "model.backbone.weights=", "model.backbone.freeze_at=0"]


@pytest.mark.parametrize("overrides", [["model.roi_head.pooler=roi_pool"], ["model.roi_head.pooler=roi_align"], GN])
def test_peer_detections_agree_with_detres(overrides):
    cfg, model, images, _ = _tiny_detector(overrides)
    peer = build_peer(model, cfg).eval()
    with torch.inference_mode():
        ours, theirs = model(images), peer(images)
    agreement = compare_detections(ours, theirs)
    assert agreement["num_ours"] > 10  # calibration makes detections pass the score threshold
    assert agreement["matched_frac"] == 1.0
    assert agreement["min_iou"] > 0.99
    assert agreement["max_score_diff"] < 1e-3


def test_peer_does_not_share_weights_and_trains():
    cfg, model, images, targets = _tiny_detector([])
    peer = build_peer(model, cfg).train()
    losses = peer(images[:1], targets[:1])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        peer.roi_heads.box_predictor.cls_score.weight.zero_()
    assert model.roi_head.predictor.cls_score.weight.abs().sum() > 0  # copies, not the same tensors


def _trainable_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("freeze_at", [0, 2])
def test_peer_trains_the_parameters_detres_trains(freeze_at):
    # A peer that also trained the stem and conv2_x, which detres freezes, would do more backward work than detres
    # and flatter detres's training ratio.
    cfg, model, _, _ = _tiny_detector([f"model.backbone.freeze_at={freeze_at}"])
    peer = build_peer(model, cfg)
    assert _trainable_count(peer) == _trainable_count(model)
    assert (_trainable_count(model) < sum(p.numel() for p in model.parameters())) == (freeze_at > 0)


def test_peer_trains_batch_norm_where_detres_does():
    cfg, model, images, targets = _tiny_detector(["model.backbone.frozen_bn=false", "model.backbone.freeze_at=0"])
    peer = build_peer(model, cfg)
    peer_bns = [m for m in peer.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(peer_bns) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > 0
    peer.train()
    before = peer_bns[0].running_mean.clone()
    peer(images[:1], targets[:1])
    assert not torch.equal(before, peer_bns[0].running_mean)  # batch statistics, as detres's trained BN
