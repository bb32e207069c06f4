"""R-CNN stage: the warp maps a box exactly onto the crop, proposal labelling, RoI-centric batches, the loss."""

import numpy as np
import torch
from torch import nn

from detres.boxes import BoxCoder
from detres.localization.rcnn import (
    BalancedRoIBatchSampler,
    LocRCNN,
    label_proposals,
    rcnn_loss,
    rcnn_rescore,
    warp_boxes,
)

S = 224


def test_warp_samples_the_box_at_the_crop_pixel_centres():
    # channel 0 holds each pixel's continuous x centre, channel 1 its y centre: a linear image, so the warp's
    # bilinear samples (and their per-bin averages) return exactly the sampled coordinates.
    h, w = 300, 400
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    image = torch.stack([xs, ys, torch.zeros_like(xs)]).float()
    box = torch.tensor([[37.0, 52.5, 291.0, 160.0]])  # 254 x 107.5, neither a multiple of 224
    crop = warp_boxes(image, box, S)[0]
    j = torch.arange(S) + 0.5
    torch.testing.assert_close(crop[0, 0], 37.0 + j * (291.0 - 37.0) / S)
    torch.testing.assert_close(crop[1, :, 0], 52.5 + j * (160.0 - 52.5) / S)
    assert crop.shape == (3, S, S)


def test_warp_of_a_drawn_box_fills_the_crop_and_a_twice_larger_box_puts_it_in_the_middle_half():
    image = torch.zeros(3, 200, 300)
    image[0, 40:120, 60:220] = 1.0  # the box [60, 40, 220, 120] in continuous coordinates
    crop = warp_boxes(image, torch.tensor([[60.0, 40.0, 220.0, 120.0]]), S)[0]
    # bilinear: the outermost crop pixels sample less than half a source pixel from the box edge and blend
    # with the outside; everything else is exactly the drawn box
    torch.testing.assert_close(crop[0, 1:-1, 1:-1], torch.ones(S - 2, S - 2))
    assert crop[1:].abs().max() == 0
    assert crop[0].min() > 0.5
    crop = warp_boxes(image, torch.tensor([[-20.0, 0.0, 300.0, 160.0]]), S)[0]  # same centre, twice the size
    inner = crop[0, S // 4 + 1:3 * S // 4 - 1, S // 4 + 1:3 * S // 4 - 1]
    torch.testing.assert_close(inner, torch.ones_like(inner))
    assert crop[0, : S // 4 - 1].abs().max() == 0 and crop[0, :, 3 * S // 4 + 1:].abs().max() == 0


def test_proposal_labels_follow_the_iou_rule():
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    gt = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    proposals = torch.tensor([[0.0, 0.0, 100.0, 100.0],  # IoU 1 -> class
                              [0.0, 0.0, 100.0, 50.0],  # IoU 0.5 -> class
                              [0.0, 0.0, 100.0, 40.0],  # IoU 0.4 -> background
                              [0.0, 0.0, 10.0, 5.0],  # IoU 0.005 -> unused
                              [200.0, 200.0, 300.0, 300.0]])  # IoU 0 -> unused
    keep, labels, targets = label_proposals(proposals, gt, 3, fg_iou=0.5, bg_iou_lo=0.1, coder=coder)
    assert keep.tolist() == [0, 1, 2] and labels.tolist() == [3, 3, 0]
    torch.testing.assert_close(coder.decode(targets[1:2], proposals[1:2]), gt)
    assert targets[0].abs().max() < 1e-6 and targets[2].abs().max() == 0


def test_roi_batches_mix_images_at_the_foreground_fraction():
    labels = np.array([0] * 30 + [2] * 6 + [0] * 30 + [1] * 4)
    sampler = BalancedRoIBatchSampler(labels, batch_size=16, fg_fraction=0.25, num_batches=20, seed=0)
    batches = list(sampler)
    assert len(batches) == 20
    for batch in batches:
        assert len(batch) == 16 and len(set(batch)) == 16
        assert (labels[batch] > 0).sum() == 4
    assert len({i for b in batches for i in b}) > 50  # drawn across the whole set, not one image's RoIs


def test_rcnn_box_loss_uses_only_the_labelled_class_and_rescoring_refines_boxes():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())
    model = LocRCNN(body=body, feat_channels=8, num_classes=4)
    logits, deltas = model(torch.randn(3, 3, 32, 32))
    deltas.retain_grad()
    labels = torch.tensor([2, 0, 4])
    losses = rcnn_loss(logits, deltas, labels, torch.randn(3, 4), smooth_l1_beta=1.0)
    losses["loss_box"].backward()
    grad = deltas.grad.abs().sum(-1)
    assert grad[0, 1] > 0 and grad[2, 3] > 0 and grad.sum() == grad[0, 1] + grad[2, 3]  # background: none
    # rescoring with reg deltas set to (dx=0.1 in units of w/10) moves each box right by 1% of its width
    nn.init.zeros_(model.reg.weight)
    with torch.no_grad():
        model.reg.bias.zero_()
        model.reg.bias[4 * 1] = 0.1  # class 2's dx
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    props = torch.tensor([[10.0, 10.0, 110.0, 60.0], [0.0, 0.0, 50.0, 50.0]])
    boxes, scores = rcnn_rescore(model.eval(), torch.randn(3, 80, 120), props, 2, size=32, coder=coder)
    torch.testing.assert_close(boxes, torch.tensor([[11.0, 10.0, 111.0, 60.0], [0.5, 0.0, 50.5, 50.0]]))
    assert scores.shape == (2,) and ((scores > 0) & (scores < 1)).all()
