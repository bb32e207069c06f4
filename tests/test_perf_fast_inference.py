"""optimize_for_inference: folded BN, channels-last and the fast RoI pool leave fp32 detections unchanged."""

import copy

import pytest
import torch

from detres.config import load_config
from detres.errors import ConfigError
from detres.modeling.fast_inference import autocast_dtype, optimize_for_inference
from detres.modeling.faster_rcnn import build_faster_rcnn
from detres.perf.agreement import compare_detections
from detres.perf.bench import calibrate_benchmark_model
from detres.perf.synthetic import synthetic_batch


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = load_config(None, ["model.backbone.depth=50", "model.backbone.width=8", "model.num_classes=3",
                             "model.rpn.post_nms_topk_test=60", "model.rpn.pre_nms_topk_test=600"])
    model = build_faster_rcnn(cfg)
    images, _ = synthetic_batch(3, height=128, width=176, num_classes=3, pixel_mean=[0.485, 0.456, 0.406],
                                pixel_std=[0.229, 0.224, 0.225], seed=0)
    calibrate_benchmark_model(model, images[:2])
    model.eval()
    with torch.inference_mode():
        reference = model(images)
    return model, images, reference


@pytest.mark.parametrize("channels_last", [True, False])
def test_fp32_detections_unchanged(tiny, channels_last):
    model, images, reference = tiny
    fast = optimize_for_inference(copy.deepcopy(model), precision="fp32", channels_last=channels_last)
    detections = fast(images)
    agreement = compare_detections(detections, reference, iou_thresh=0.999)
    assert agreement["num_ours"] > 10
    assert agreement["matched_frac"] == 1.0
    assert agreement["max_score_diff"] < 1e-4
    folded = [m for m in fast.modules() if type(m).__name__ == "FrozenBatchNorm2d"]
    assert not folded  # every frozen BN was folded into its conv


def test_bf16_runs_and_returns_float32(tiny):
    model, images, reference = tiny
    fast = optimize_for_inference(copy.deepcopy(model), precision="bf16")
    detections = fast(images[:1])
    assert detections[0]["boxes"].dtype == torch.float32 and detections[0]["scores"].dtype == torch.float32
    assert len(detections[0]["boxes"]) > 0


def test_rejects_bad_precision_and_training(tiny):
    model, images, _ = tiny
    with pytest.raises(ConfigError, match="precision"):
        optimize_for_inference(copy.deepcopy(model), precision="int8")
    fast = optimize_for_inference(copy.deepcopy(model), precision="fp16")
    with pytest.raises(ConfigError, match="CUDA"):
        fast(images[:1])
    with pytest.raises(ValueError, match="inference-only"):
        fast(images[:1], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])


def test_test_precision_names_map_to_autocast_dtypes():
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None and autocast_dtype("bf16", cpu) == torch.bfloat16
    assert autocast_dtype("fp16", torch.device("cuda")) == torch.float16
    with pytest.raises(ConfigError, match="test.precision"):
        autocast_dtype("half", cpu)
    with pytest.raises(ConfigError, match="CUDA"):
        autocast_dtype("fp16", cpu)
