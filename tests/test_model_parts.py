"""Anchors, box coding, matching, RPN and Fast R-CNN labelling on hand-made cases."""

import math

import torch

from detres.boxes import BoxCoder
from detres.config import load_config
from detres.modeling.anchors import AnchorGenerator
from detres.modeling.faster_rcnn import build_faster_rcnn
from detres.modeling.matching import BACKGROUND, IGNORED, Matcher, sample_balanced
from detres.modeling.postprocess import select_detections
from detres.modeling.roi_head_training import label_and_sample
from detres.modeling.rpn_training import label_anchors


def test_anchor_grid_against_hand_computation():
    gen = AnchorGenerator(sizes=[32.0, 64.0], aspect_ratios=[0.5, 1.0, 2.0], stride=16)
    assert gen.num_anchors == 6
    grid = gen.grid(2, 3)
    assert grid.shape == (2 * 3 * 6, 4)
    # ratio 1, size 32 is the 3rd anchor (ratio-major: r=0.5 s=32, r=0.5 s=64, r=1 s=32 ...)
    assert torch.equal(grid[2], torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    # ratio 0.5 (h/w) size 64: w = 64*sqrt(2) = 90.5, h = 64/sqrt(2) = 45.25; corners rounded
    w, h = 64 * math.sqrt(2), 64 / math.sqrt(2)
    assert torch.equal(grid[1], torch.tensor([round(-w / 2), round(-h / 2), round(w / 2), round(h / 2)],
                                             dtype=torch.float32))
    # order: y, then x, then anchor — position (y=1, x=2) starts at row (1*3+2)*6 and is shifted by (32, 16)
    assert torch.equal(grid[(1 * 3 + 2) * 6 + 2], torch.tensor([32.0 - 16, 16.0 - 16, 32.0 + 16, 16.0 + 16]))


def test_box_coder_round_trip_and_known_deltas():
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    ref = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 25.0, 15.0]])
    tgt = torch.tensor([[2.0, 4.0, 12.0, 24.0], [0.0, 0.0, 40.0, 30.0]])
    deltas = coder.encode(ref, tgt)
    # first pair: same size, centre moved by (2, 4): dx = 10*2/10, dy = 10*4/20, dw = dh = 0
    assert torch.allclose(deltas[0], torch.tensor([2.0, 2.0, 0.0, 0.0]))
    assert torch.allclose(coder.decode(deltas, ref), tgt, atol=1e-4)
    per_class = coder.decode(torch.cat([deltas, torch.zeros_like(deltas)], 1), ref)
    assert torch.allclose(per_class[:, 4:], ref, atol=1e-5)  # zero deltas give the reference back


def test_matcher_thresholds_and_best_anchor_rule():
    iou = torch.tensor([[0.8, 0.5, 0.2, 0.1, 0.0],
                        [0.1, 0.2, 0.25, 0.6, 0.0]])
    plain = Matcher(high=0.7, low=0.3, allow_low_quality=False)(iou)
    assert plain.tolist() == [0, IGNORED, BACKGROUND, IGNORED, BACKGROUND]
    best = Matcher(high=0.7, low=0.3, allow_low_quality=True)(iou)
    assert best.tolist() == [0, IGNORED, BACKGROUND, 1, BACKGROUND]  # gt 1's best anchor (0.6) is claimed
    assert Matcher(high=0.5, low=0.5, allow_low_quality=False)(torch.zeros(0, 3)).tolist() == [BACKGROUND] * 3


def test_sample_balanced_respects_fraction_and_fills_with_negatives():
    labels = torch.tensor([1] * 10 + [0] * 100 + [-1] * 5)
    pos, neg = sample_balanced(labels, num=16, positive_fraction=0.25)
    assert len(pos) == 4 and len(neg) == 12
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    pos, neg = sample_balanced(torch.tensor([1, 0, 0]), num=16, positive_fraction=0.5)
    assert len(pos) == 1 and len(neg) == 2


def _tiny_cfg(*extra):
    return load_config(None, ["model.num_classes=3", "model.backbone.depth=18", "model.backbone.width=8",
                              "model.rpn.anchor_sizes=[16,32]", "model.rpn.aspect_ratios=[1.0]", *extra])


def test_rpn_anchor_labels_thresholds_border_and_crowd():
    model = build_faster_rcnn(_tiny_cfg())
    rpn = model.rpn
    anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0],     # IoU 1 with gt 0 -> object
                            [4.0, 0.0, 36.0, 32.0],     # IoU 28/36 = 0.78 -> object
                            [16.0, 0.0, 48.0, 32.0],    # IoU 1/3 -> between thresholds: ignored
                            [60.0, 60.0, 76.0, 76.0],   # far away -> background
                            [-8.0, 40.0, 24.0, 72.0],   # crosses the left border -> ignored
                            [80.0, 0.0, 96.0, 16.0],    # inside the crowd region -> ignored, never background
                            [40.0, 40.0, 50.0, 60.0]])  # gt 1's best anchor, IoU 0.4 < 0.7 -> object anyway
    target = {"boxes": torch.tensor([[0.0, 0.0, 32.0, 32.0], [40.0, 40.0, 60.0, 65.0], [76.0, 0.0, 100.0, 20.0]]),
              "labels": torch.tensor([1, 2, 1]), "ignore": torch.tensor([False, False, True])}
    labels, boxes = label_anchors(rpn, anchors, (100, 100), target)
    assert labels.tolist() == [1, 1, -1, 0, -1, -1, 1]
    assert torch.equal(boxes[6], target["boxes"][1])
    rpn.ignore_cross_boundary = False
    labels, _ = label_anchors(rpn, anchors, (100, 100), target)
    assert labels[4] == 0  # with the option off, the border anchor is an ordinary background anchor


def test_fast_rcnn_labelling_and_sampling():
    head = build_faster_rcnn(_tiny_cfg("model.roi_head.batch_size_per_image=8",
                                       "model.roi_head.bg_iou_thresh_lo=0.1")).roi_head
    proposals = torch.tensor([[0.0, 0.0, 20.0, 20.0],     # IoU 1 with gt 0: fg, class 2
                              [0.0, 0.0, 20.0, 30.0],     # IoU 0.67: fg
                              [10.0, 0.0, 30.0, 20.0],    # IoU 1/3: background
                              [90.0, 90.0, 99.0, 99.0]])  # IoU 0 < 0.1: neither
    target = {"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([2])}
    rois, cls, reg = label_and_sample(head, proposals, target)
    # 25% of 8 = 2 foreground slots: the gt box itself (added to the proposals) and the 2 fg proposals compete
    assert (cls > 0).sum() == 2 and set(cls[cls > 0].tolist()) == {2}
    assert (cls == 0).sum() == 1 and torch.equal(rois[cls == 0][0], proposals[2])
    fg_rois = rois[cls > 0]
    assert torch.allclose(head.box_coder.decode(reg[cls > 0], fg_rois), target["boxes"].expand(2, 4), atol=1e-4)


def test_post_processing_per_class_nms_and_threshold():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.0, 0.03, 0.97]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    boxes = boxes[:, None, :].expand(3, 3, 4)
    out = select_detections(scores, boxes, score_thresh=0.05, nms_thresh=0.3, detections_per_img=100)
    # class 1: the two overlapping boxes collapse to the 0.9 one; class 2 keeps its box though it overlaps
    assert out["labels"].tolist() == [2, 1]
    assert torch.allclose(out["scores"], torch.tensor([0.97, 0.9]))
