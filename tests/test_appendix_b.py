"""App. B: box voting, scale selection, maxout, refinement, context and ensembles, on hand-worked cases."""

import math

import pytest
import torch
from test_model_training import _model, _scene

from detres.modeling.detector import Detector, InferenceOptions, _ModelView
from detres.modeling.multiscale import select_scale_pairs
from detres.modeling.voting import box_voting


def test_box_voting_by_hand():
    kept = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    pool = torch.tensor([[0.0, 0.0, 10.0, 10.0],   # itself, score 0.9
                         [1.0, 1.0, 11.0, 11.0],   # IoU 81/119 = 0.68 -> votes, score 0.3
                         [5.0, 5.0, 15.0, 15.0],   # IoU 25/175 = 0.14 -> does not vote
                         [0.0, 0.0, 10.0, 10.0]])  # same box, other class -> does not vote
    scores = torch.tensor([0.9, 0.3, 0.8, 0.7])
    labels = torch.tensor([1, 1, 1, 2])
    voted = box_voting(kept, torch.tensor([1]), pool, scores, labels, iou_thresh=0.5)
    expected = (0.9 * pool[0] + 0.3 * pool[1]) / 1.2
    assert torch.allclose(voted[0], expected)
    assert torch.allclose(box_voting(kept, torch.tensor([1]), pool, scores, labels, iou_thresh=0.7)[0], pool[0])


def test_scale_selection_by_hand():
    factors = [0.5, 1.0, 2.0]  # pyramid levels relative to the input image
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0],    # sides 50/100/200: closest 200 (level 2), smaller -> no
                                                        # larger level, so the neighbour below (level 1)
                          [0.0, 0.0, 300.0, 300.0],    # sides 150/300/600: 300 closest (1), larger -> level 0
                          [0.0, 0.0, 200.0, 200.0],    # sides 100/200/400: 200 closest (1), smaller -> level 2
                          [0.0, 0.0, 1000.0, 1000.0],  # sides 500/...: level 0 closest, larger, no smaller -> 1
                          [0.0, 0.0, 224.0, 224.0]])   # exactly 224 at level 1: the larger neighbour, level 2
    k1, k2 = select_scale_pairs(boxes, factors)
    assert k1.tolist() == [2, 1, 1, 0, 1]
    assert k2.tolist() == [1, 0, 2, 1, 2]
    one_level = select_scale_pairs(boxes, [1.0])
    assert one_level[0].tolist() == one_level[1].tolist() == [0] * 5
    # tie in log distance (side 224/sqrt(2) at level 1 and 224*sqrt(2) at level 2): the larger level
    side = 224 / math.sqrt(2)
    k1, _ = select_scale_pairs(torch.tensor([[0.0, 0.0, side, side]]), [1.0, 2.0])
    assert k1.item() == 1
    # another pre-training crop (a demo net pre-trained at 56 px): the same rule around 56, i.e. a quarter of 224
    k1, k2 = select_scale_pairs(boxes / 4, factors, target=56.0)
    assert k1.tolist() == [2, 1, 1, 0, 1] and k2.tolist() == [1, 0, 2, 1, 2]


@pytest.fixture(scope="module")
def trained_like():
    torch.manual_seed(0)
    model = _model().eval()
    images, _ = _scene()
    return model, images


def test_maxout_equals_elementwise_max_of_two_single_scale_features(trained_like):
    model, images = trained_like
    options = InferenceOptions(multiscale=True, pyramid_scales=(48, 96, 144))
    view = _ModelView(model, images[:1], options)
    boxes = torch.tensor([[10.0, 20.0, 50.0, 70.0], [0.0, 0.0, 90.0, 90.0], [5.0, 5.0, 20.0, 15.0]])
    factors, maps = view.levels[0]
    k1, k2 = select_scale_pairs(boxes, factors)
    merged = view.roi_features([boxes])
    for i in range(len(boxes)):
        a = model.roi_head.roi_features(maps[k1[i]], [boxes[i:i + 1] * factors[k1[i]]])
        b = model.roi_head.roi_features(maps[k2[i]], [boxes[i:i + 1] * factors[k2[i]]])
        assert torch.allclose(merged[i], torch.maximum(a, b)[0], atol=1e-5)
    assert not torch.equal(k1, k2)


def test_one_scale_pyramid_equals_single_scale_testing(trained_like):
    model, images = trained_like
    short = min(images[0].shape[1:])
    baseline = model(images[:1])[0]
    multi = Detector([model], InferenceOptions(multiscale=True, pyramid_scales=(short,),
                                                      max_ratio=10.0))(images[:1])[0]
    assert torch.allclose(multi["boxes"], baseline["boxes"], atol=1e-4)
    assert torch.allclose(multi["scores"], baseline["scores"], atol=1e-5)


def test_refinement_with_zero_deltas_reproduces_the_baseline_before_nms(trained_like):
    model, images = trained_like
    predictor = model.roi_head.predictor
    saved = predictor.bbox_pred.weight.detach().clone(), predictor.bbox_pred.bias.detach().clone()
    try:
        with torch.no_grad():
            predictor.bbox_pred.weight.zero_()
            predictor.bbox_pred.bias.zero_()
            baseline = model.inference_intermediates(images).per_image
            union = Detector([model], InferenceOptions(box_refine=True)).candidates(images)
    finally:
        with torch.no_grad():
            predictor.bbox_pred.weight.copy_(saved[0])
            predictor.bbox_pred.bias.copy_(saved[1])
    for (scores, boxes), (u_scores, u_boxes) in zip(baseline, union):
        n = len(scores)
        assert len(u_scores) == 2 * n
        for part in (slice(0, n), slice(n, 2 * n)):  # the original pass and the refined pass
            assert torch.allclose(u_scores[part], scores, atol=1e-5)
            assert torch.allclose(u_boxes[part], boxes, atol=1e-4)


def test_ensembles_of_one_model_and_of_a_model_with_itself_equal_the_model(trained_like):
    model, images = trained_like
    baseline = model(images)
    for members in ([model], [model, model]):
        out = Detector(members, InferenceOptions())(images)
        for a, b in zip(baseline, out):
            assert torch.allclose(a["scores"], b["scores"], atol=1e-6)
            assert torch.allclose(a["boxes"], b["boxes"], atol=1e-5)
            assert torch.equal(a["labels"], b["labels"])


def test_context_feature_is_shared_by_all_rois_and_depends_on_the_image():
    from detres.config import load_config
    from detres.modeling.faster_rcnn import build_faster_rcnn

    cfg = load_config(None, ["model.num_classes=3", "model.backbone.depth=18", "model.backbone.width=8",
                             "model.roi_head.context=true", "model.rpn.anchor_sizes=[16,32]"])
    model = build_faster_rcnn(cfg).eval()
    assert model.roi_head.predictor.cls_score.in_features == 2 * 64
    images, _ = _scene()
    head = model.roi_head
    with torch.no_grad():
        features, sizes = model.backbone(images)
        boxes = [torch.tensor([[0.0, 0.0, 30.0, 30.0], [20.0, 10.0, 60.0, 50.0], [5.0, 5.0, 90.0, 80.0]])] * 2
        roi = head.roi_features(features, boxes)
        both = head.add_context(roi, features, boxes, sizes)
    context = both[:, roi.shape[1]:]
    assert torch.equal(both[:, :roi.shape[1]], roi)
    assert torch.equal(context[0], context[1]) and torch.equal(context[1], context[2])  # image 0's RoIs
    assert torch.equal(context[3], context[5])  # image 1's RoIs
    assert not torch.allclose(context[0], context[3])  # another image, another context


def test_context_boxes_join_the_rois_in_one_conv5_pass():
    from torch import nn

    from detres.config import load_config
    from detres.modeling.faster_rcnn import build_faster_rcnn

    cfg = load_config(None, ["model.num_classes=3", "model.backbone.depth=18", "model.backbone.width=8",
                             "model.roi_head.context=true", "model.rpn.anchor_sizes=[16,32]",
                             "model.backbone.frozen_bn=false"])
    model = build_faster_rcnn(cfg).eval()
    images, _ = _scene()
    head = model.roi_head
    boxes = [torch.tensor([[0.0, 0.0, 30.0, 30.0], [20.0, 10.0, 60.0, 50.0]]), torch.tensor([[5.0, 5.0, 90.0, 80.0]])]
    with torch.no_grad():
        features, sizes = model.backbone(images)
        joint = head.forward_boxes(features, boxes, sizes)
        separate = head.predict(head.add_context(head.roi_features(features, boxes), features, boxes, sizes))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(joint, separate))  # the same function in eval
    bn = next(m for m in head.res5.modules() if isinstance(m, nn.BatchNorm2d))
    head.train()
    before = int(bn.num_batches_tracked)
    head.forward_boxes(features, boxes, sizes)
    assert int(bn.num_batches_tracked) == before + 1  # one conv5_x pass: BN statistics updated once per step
