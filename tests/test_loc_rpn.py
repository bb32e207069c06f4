"""Per-class RPN: only the ground-truth class's outputs get targets, and dense testing on an image the size of
one crop equals center-crop testing."""

import numpy as np
import torch
from torch import nn
from torchvision.ops import box_iou

from detres.boxes import BoxCoder
from detres.localization.dense_testing import rpn_center_crop, rpn_dense
from detres.localization.per_class_rpn import LocRPNPredictor, PerClassRPN, per_class_rpn_loss, per_class_targets
from detres.modeling.anchors import AnchorGenerator
from detres.modeling.matching import Matcher

NUM_CLASSES = 5


def _predictor(seed: int = 0) -> LocRPNPredictor:
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=4, padding=1))
    anchors = AnchorGenerator(sizes=[16.0, 32.0], aspect_ratios=[0.5, 1.0, 2.0], stride=16)
    model = PerClassRPN(body=body, in_channels=8, head_channels=8, num_classes=NUM_CLASSES,
                        num_anchors=anchors.num_anchors)
    for layer in (model.cls, model.reg):  # the 0.01 init makes every box the anchor; spread the outputs
        nn.init.normal_(layer.weight, std=0.5)
    return LocRPNPredictor(model=model.eval(), anchor_generator=anchors, coder=BoxCoder())


def test_output_layout_is_anchor_grid_order_then_class():
    pred = _predictor()
    logits, deltas, (fh, fw) = pred.model(torch.randn(2, 3, 64, 48))
    a = pred.anchor_generator.num_anchors
    assert (fh, fw) == (4, 3)
    assert logits.shape == (2, fh * fw * a, NUM_CLASSES) and deltas.shape == (2, fh * fw * a, NUM_CLASSES, 4)
    # output row (y=1, x=2, anchor=3), class 4 is cls channel 3*C + 4 at that position
    feats = torch.relu(pred.model.conv(pred.model.body(torch.ones(1, 3, 64, 48))))
    raw = pred.model.cls(feats)[0, 3 * NUM_CLASSES + 4, 1, 2]
    out = pred.model(torch.ones(1, 3, 64, 48))[0][0, (1 * fw + 2) * a + 3, 4]
    assert torch.allclose(raw, out)


def test_per_class_targets_touch_only_the_gt_class_column():
    pos, neg = torch.tensor([2, 7]), torch.tensor([0, 5])
    target, weight = per_class_targets(pos, neg, gt_class=3, num_anchors=10, num_classes=NUM_CLASSES)
    expected_t = torch.zeros(10, NUM_CLASSES)
    expected_t[[2, 7], 3] = 1
    expected_w = torch.zeros(10, NUM_CLASSES)
    expected_w[[0, 2, 5, 7], 3] = 1
    assert torch.equal(target, expected_t) and torch.equal(weight, expected_w)


def test_loss_gradient_reaches_only_the_gt_class_outputs():
    pred = _predictor()
    images = torch.randn(2, 3, 64, 64)
    logits, deltas, hw = pred.model(images)
    logits.retain_grad()
    deltas.retain_grad()
    anchors = pred.anchor_generator.grid(*hw, torch.device("cpu"))
    gt = [torch.tensor([[8.0, 8.0, 40.0, 40.0]]), torch.tensor([[20.0, 10.0, 60.0, 34.0]])]
    labels = torch.tensor([2, 5])  # contiguous labels -> columns 1 and 4
    losses = per_class_rpn_loss(logits, deltas, anchors, gt, labels, matcher=Matcher(high=0.5, low=0.3,
                                allow_low_quality=True), coder=pred.coder, anchors_per_image=8,
                                positive_fraction=0.5, smooth_l1_beta=1 / 9)
    (losses["loss_rpn_cls"] + losses["loss_rpn_box"]).backward()
    for i, col in enumerate([1, 4]):
        others = [c for c in range(NUM_CLASSES) if c != col]
        assert logits.grad[i][:, others].abs().sum() == 0 and deltas.grad[i][:, others].abs().sum() == 0
        rows = logits.grad[i][:, col].nonzero().squeeze(1)
        assert len(rows) == 8  # the 8 sampled anchors, nothing else
        pos_rows = deltas.grad[i][:, col].abs().sum(1).nonzero().squeeze(1)
        assert 1 <= len(pos_rows) <= 4 and set(pos_rows.tolist()) <= set(rows.tolist())
        assert (box_iou(anchors[pos_rows], gt[i]).max(1).values >= 0.3).all()  # positives overlap the object


def test_dense_on_a_crop_sized_image_equals_center_crop():
    pred = _predictor(seed=1)
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    common = dict(pixel_mean=[0.5, 0.5, 0.5], pixel_std=[0.25, 0.25, 0.25], pre_nms_topk=50, nms_thresh=0.7,
                  topk=10)
    dense = rpn_dense(pred, rgb, [1, 4], scales=[64], max_size=1000, **common)
    crop = rpn_center_crop(pred, rgb, [1, 4], resize=64, crop=64, **common)
    for label in (1, 4):
        assert len(dense[label][0]) == 10
        torch.testing.assert_close(dense[label][0], crop[label][0])
        torch.testing.assert_close(dense[label][1], crop[label][1])


def test_center_crop_boxes_stay_in_the_crop_and_dense_maps_back_to_the_original():
    pred = _predictor(seed=2)
    rgb = np.random.default_rng(1).integers(0, 256, (48, 96, 3), dtype=np.uint8)  # h=48, w=96
    common = dict(pixel_mean=[0.5] * 3, pixel_std=[0.25] * 3, pre_nms_topk=100, nms_thresh=0.7, topk=20)
    # shorter side 48 -> 64 (scale 4/3, width 128), central 64x64 crop = original x in [24, 72)
    crop = rpn_center_crop(pred, rgb, [2], resize=64, crop=64, **common)[2][0]
    assert (crop[:, 0] >= 24 - 1e-4).all() and (crop[:, 2] <= 72 + 1e-4).all()
    assert (crop[:, 1] >= 0).all() and (crop[:, 3] <= 48 + 1e-4).all()
    dense = rpn_dense(pred, rgb, [2], scales=[48, 96], max_size=1000, **common)[2][0]
    assert (dense[:, 2] <= 96 + 1e-4).all() and (dense[:, 3] <= 48 + 1e-4).all()
    assert dense[:, 0].min() < 24 or dense[:, 2].max() > 72  # dense sees the whole image
