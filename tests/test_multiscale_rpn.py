"""Multi-scale RPN testing: one scale equals single-scale testing exactly; the levels that propose; the merge."""

import pytest
import torch
from test_model_training import _model, _scene
from torchvision.ops import box_iou

from detres.config import load_config
from detres.errors import ConfigError
from detres.modeling.detector import Detector, InferenceOptions, _ModelView, inference_options
from detres.modeling.multiscale import rpn_levels


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return _model().eval()


def test_one_scale_equals_single_scale_testing_exactly(model):
    images, _ = _scene()  # both images have a shorter side of 96: the one pyramid level is the input itself
    single = InferenceOptions()
    one_level = InferenceOptions(multiscale_rpn=True, pyramid_scales=(96,))
    for image in images:
        a = _ModelView(model, [image], single).proposals()[0]
        b = _ModelView(model, [image], one_level).proposals()[0]
        assert len(a) > 10 and torch.equal(a, b)
        for x, y in zip(Detector([model], single)([image]), Detector([model], one_level)([image])):
            assert all(torch.equal(x[k], y[k]) for k in ("boxes", "scores", "labels"))


def test_which_levels_propose_by_hand():
    assert rpn_levels([0.5, 1.0, 1.5], "all") == [0, 1, 2]
    assert rpn_levels([0.5, 1.0, 1.5], "adjacent") == [1, 2]  # the input level and its nearer neighbour (log 1.5)
    assert rpn_levels([0.8, 1.25], "adjacent") == [0, 1]
    assert rpn_levels([0.5, 0.9, 1.1, 2.0], "adjacent") == [1, 2]  # the two around the test scale, none is it
    assert rpn_levels([0.4, 0.6, 1.0, 1.5, 2.0], "adjacent") == [2, 3]  # 1.5 is nearer than 0.6
    assert rpn_levels([1.0], "adjacent") == [0]
    with pytest.raises(ValueError):
        rpn_levels([1.0], "three")


def test_merged_proposals_come_from_every_level_nms_and_top_k(model):
    images, _ = _scene()
    options = InferenceOptions(multiscale_rpn=True, pyramid_scales=(48, 96, 192))
    view = _ModelView(model, [images[0]], options)
    merged = view.proposals()[0]
    rpn = model.rpn
    factors, maps = view.levels[0]
    per_level = []  # each level's own proposals in input pixels, computed here level by level
    for factor, fmap in zip(factors, maps):
        size = (round(96 * factor), round(128 * factor))
        (boxes, scores), = rpn.propose_scored(*rpn.head_outputs(fmap), [size])
        per_level.append((boxes / factor).clamp(min=0).clamp(max=torch.tensor([128.0, 96.0, 128.0, 96.0])))
    union = torch.cat(per_level)
    assert 0 < len(merged) <= rpn.post_nms_topk[1]
    iou = box_iou(merged, merged).fill_diagonal_(0)
    assert iou.max() <= rpn.nms_thresh  # merged by NMS at the RPN's threshold
    origin = [int((box_iou(merged, lv) > 0.9999).any(dim=1).sum()) for lv in per_level]
    assert sum(origin) >= len(merged) and min(origin) > 0, f"every level should contribute: {origin}"
    assert bool((box_iou(merged, union) > 0.9999).any(dim=1).all())
    dets = Detector([model], options)([images[0]])[0]
    assert dets["boxes"].shape[1] == 4


def test_config_keys_reach_the_options_and_bad_values_are_refused():
    cfg = load_config(None, ["test.multiscale_rpn=true", "test.multiscale_rpn_scales=adjacent"])
    options = inference_options(cfg)
    assert options.multiscale_rpn and options.multiscale_rpn_scales == "adjacent"
    with pytest.raises(ConfigError, match="multiscale_rpn_scales='two'"):
        inference_options(load_config(None, ["test.multiscale_rpn_scales=two"]))
