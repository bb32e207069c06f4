"""Tiny calibrated detectors and their exports for the tests/test_deploy_*.py files."""

from __future__ import annotations

import torch

from detres.config import load_config
from detres.data.records import ClassMap
from detres.modeling.faster_rcnn import build_faster_rcnn
from detres.perf.agreement import compare_detections
from detres.perf.bench import calibrate_benchmark_model
from detres.perf.synthetic import synthetic_batch

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TINY = ["model.backbone.depth=18", "model.backbone.width=8", "model.num_classes=3",
        "model.rpn.post_nms_topk_test=60", "model.rpn.pre_nms_topk_test=600", "data.input.test_scale=128",
        "data.input.max_size=256"]
CLASS_MAP = ClassMap(names=["circle", "square", "triangle"], dataset_ids=[1, 2, 3])


def tiny_training_overrides(data, run_dir, iters: int = 500) -> list[str]:
    """A width-8 detector trained `iters` iterations (lr /10 at 80%) on a make_shapes set and tested on its training
    images: at 500 iterations on 8-12 images, mAP@.5 ~55 (~25 s on one core), a trained model for the tests."""
    ann, images = f"{data}/coco/annotations/instances_train.json", f"{data}/coco/train"
    return [f"data.train.ann_file={ann}", f"data.train.image_dir={images}", f"data.test.ann_file={ann}",
            f"data.test.image_dir={images}", f"output.dir={run_dir}", "output.tensorboard=false",
            "data.num_workers=0", "model.backbone.width=8", "data.input.train_scales=[96]",
            "data.input.test_scale=96", "data.input.max_size=160", "model.rpn.anchor_sizes=[16,32,64]",
            "model.rpn.post_nms_topk_train=64", "model.rpn.pre_nms_topk_test=200", "model.rpn.post_nms_topk_test=32",
            "model.roi_head.batch_size_per_image=16", "solver.ims_per_batch=2", "solver.warmup_iters=10",
            f"solver.max_iter={iters}", f"solver.steps=[{iters * 4 // 5}]", "solver.base_lr=0.02",
            "test.eval_metrics=[coco]", "output.checkpoint_period=100000", "output.log_period=100"]


def tiny_model(overrides: list[str]):
    """(cfg, calibrated eval-mode model, images of three sizes)."""
    torch.manual_seed(0)
    cfg = load_config(None, TINY + overrides)
    model = build_faster_rcnn(cfg)
    images, _ = synthetic_batch(3, height=128, width=176, num_classes=3, pixel_mean=MEAN, pixel_std=STD, seed=0)
    calibrate_benchmark_model(model, images[:2])
    images = [images[0], images[1][:, :96, :150], images[2][:, :72, :100]]
    return cfg, model.eval(), images


def eager(model, images):
    with torch.no_grad():
        return [model([image])[0] for image in images]


def assert_same(ours, reference, *, min_detections=1):
    """The issue's fp32 bound: every detection matched (same label, IoU > 0.99), score difference < 1e-4."""
    agreement = compare_detections(ours, reference, iou_thresh=0.99)
    assert agreement["num_theirs"] >= min_detections
    assert agreement["num_ours"] == agreement["num_theirs"]
    assert agreement["matched_frac"] == 1.0, agreement
    assert agreement["max_score_diff"] < 1e-4, agreement
    for det in ours:
        assert det["boxes"].dtype == torch.float32 and det["labels"].dtype == torch.int64
