"""model.backbone.norm / model.roi_head.norm: GroupNorm nets hold no BatchNorm, survive BN folding unchanged, export
to ONNX with eager's detections and round-trip through checkpoints; checkpoints and configs of the old frozen_bn key
still load, as the norm they meant."""

import copy
import json

import pytest
import torch
from deploy_helpers import CLASS_MAP, assert_same, eager, tiny_model
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detres.config import config_from_dict, config_to_dict, load_config
from detres.deploy.export import export_detector
from detres.deploy.loader import open_exported
from detres.engine.loading import load_detector
from detres.errors import ConfigError
from detres.io.checkpoint import save_checkpoint
from detres.modeling import resnet as R
from detres.modeling.batchnorm import fold_frozen_bn
from detres.modeling.fast_inference import optimize_for_inference
from detres.modeling.faster_rcnn import build_faster_rcnn

BN_TYPES = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _kinds(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules() if isinstance(m, (*BN_TYPES, nn.GroupNorm))}


def test_gn_resnet_has_no_batchnorm_and_32_groups_where_channels_allow():
    model = R.resnet50(width=64, norm="gn")
    assert _kinds(model) == {nn.GroupNorm}
    groups = {m.num_channels: m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)}
    assert set(groups.values()) == {32}  # 64..2048 channels, all divisible by 32
    assert R.gn_groups(16) == 16 and R.gn_groups(48) == 24 and R.gn_groups(2048) == 32
    # the same keys as BN's affine parameters, so tools that read `bn*.weight` keep working
    assert "layer1.0.bn1.weight" in model.state_dict() and "layer1.0.bn1.running_mean" not in model.state_dict()


def test_detector_norms_per_part():
    gn = build_faster_rcnn(load_config(None, ["model.backbone.depth=18", "model.backbone.width=8",
                                              "model.backbone.norm=gn"]))
    assert _kinds(gn) == {nn.GroupNorm}
    mixed = build_faster_rcnn(load_config(None, ["model.backbone.depth=18", "model.backbone.width=8",
                                                 "model.backbone.norm=frozen_bn", "model.roi_head.norm=gn"]))
    assert _kinds(mixed.trunk) == {FrozenBatchNorm2d} and _kinds(mixed.roi_head) == {nn.GroupNorm}
    trained = build_faster_rcnn(load_config(None, ["model.backbone.depth=18", "model.backbone.width=8",
                                                   "model.backbone.norm=gn", "model.roi_head.norm=bn"]))
    assert _kinds(trained.trunk) == {nn.GroupNorm} and _kinds(trained.roi_head) == {nn.BatchNorm2d}


def test_unknown_norm_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="model.backbone.norm='layer'"):
        build_faster_rcnn(load_config(None, ["model.backbone.norm=layer"]))
    with pytest.raises(ConfigError, match="model.roi_head.norm='sync_bn'"):
        build_faster_rcnn(load_config(None, ["model.roi_head.norm=sync_bn"]))


def test_bn_folding_and_the_fast_path_leave_a_gn_detector_unchanged():
    _, model, images = tiny_model(["model.backbone.norm=gn"])
    reference = eager(model, images)
    folded = fold_frozen_bn(copy.deepcopy(model))
    assert _kinds(folded) == {nn.GroupNorm}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), folded.state_dict().values()))
    fast = optimize_for_inference(copy.deepcopy(model))
    assert_same(eager(fast, images), reference, min_detections=5)


def test_mixed_model_folds_its_bn_and_keeps_its_gn():
    _, model, images = tiny_model(["model.roi_head.norm=gn"])  # frozen BN trunk, GN conv5_x
    folded = fold_frozen_bn(copy.deepcopy(model))
    assert _kinds(folded.trunk) == set() and _kinds(folded.roi_head) == {nn.GroupNorm}
    assert_same(eager(folded, images), eager(model, images), min_detections=5)


def test_gn_export_round_trip_in_onnxruntime(tmp_path):
    cfg, model, images = tiny_model(["model.backbone.norm=gn", "model.roi_head.pooler=roi_align"])
    reference = eager(model, images)
    out = export_detector(model, cfg, CLASS_MAP, tmp_path / "gn", fmt="onnx")
    detector, _ = open_exported(out, backend="onnxruntime")
    assert_same(eager(detector, images), reference, min_detections=5)


def test_gn_checkpoint_round_trip(tmp_path):
    cfg, model, images = tiny_model(["model.backbone.norm=gn"])
    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(cfg), "class_map": CLASS_MAP.to_dict()},
                    tmp_path / "gn.pth")
    loaded, _, stored = load_detector(tmp_path / "gn.pth")
    assert stored.model.backbone.norm == "gn" and _kinds(loaded) == {nn.GroupNorm}
    assert_same(eager(loaded, images), eager(model, images), min_detections=5)


@pytest.mark.parametrize(("old", "norm", "kind"), [(True, "frozen_bn", FrozenBatchNorm2d),
                                                   (False, "bn", nn.BatchNorm2d)])
def test_checkpoint_of_the_old_frozen_bn_key_loads_as_its_norm(tmp_path, old, norm, kind):
    cfg, model, images = tiny_model([f"model.backbone.norm={norm}"])
    stored = config_to_dict(cfg)
    del stored["model"]["backbone"]["norm"]
    stored["model"]["backbone"]["frozen_bn"] = old  # what a checkpoint written before model.backbone.norm holds
    del stored["model"]["roi_head"]["norm"]
    save_checkpoint({"model": model.state_dict(), "config": stored, "class_map": CLASS_MAP.to_dict()},
                    tmp_path / "old.pth")
    loaded, _, cfg_loaded = load_detector(tmp_path / "old.pth")
    assert cfg_loaded.model.backbone.norm == norm and _kinds(loaded) == {kind}
    assert_same(eager(loaded, images), eager(model, images), min_detections=5)


def test_old_key_in_files_and_overrides(tmp_path):
    (tmp_path / "old.yaml").write_text("model:\n  backbone: {frozen_bn: false}\n")
    assert load_config(tmp_path / "old.yaml").model.backbone.norm == "bn"
    assert load_config(None, ["model.backbone.frozen_bn=true"]).model.backbone.norm == "frozen_bn"
    with pytest.raises(ConfigError, match="contradicts"):
        config_from_dict({"model": {"backbone": {"frozen_bn": True, "norm": "gn"}}})
    with pytest.raises(ConfigError, match="model.backbone.norm: frozen_bn | bn"):
        load_config(None, ["model.backbone.frozen_bn=maybe"])


def test_gn_from_scratch_learns_the_demo_shapes_and_detres_test_scores_its_checkpoint(tmp_path):
    """GN, no weights, 300 iterations on 16 demo images at scale 96 (1 thread: ~20 s CPU): 22.4 VOC07 mAP on those
    images (an untrained net scores 0.8 there); ask >= 10. Then `detres test` on its checkpoint, through the fast
    path (BN folding skips GN), reproduces the trainer's number. Trained BN reaches 27.7 in the same setting."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "datasets"))
    import make_shapes

    from detres.engine.train import train_detector

    data = make_shapes.generate(tmp_path / "shapes", seed=1, num_train=16, num_val=4, min_size=64, max_size=96)
    ann, images = f"{data}/coco/annotations/instances_train.json", f"{data}/coco/train"
    overrides = [f"data.train.ann_file={ann}", f"data.train.image_dir={images}", f"data.test.ann_file={ann}",
                 f"data.test.image_dir={images}", f"output.dir={tmp_path / 'run'}", "output.tensorboard=false",
                 "data.num_workers=0", "model.backbone.width=8", "model.backbone.norm=gn", "model.backbone.weights=",
                 "data.input.train_scales=[96]", "data.input.test_scale=96", "data.input.max_size=128",
                 "model.rpn.anchor_sizes=[16,32,64]", "model.rpn.post_nms_topk_train=40",
                 "model.rpn.post_nms_topk_test=20", "model.roi_head.batch_size_per_image=16", "solver.ims_per_batch=2",
                 "solver.warmup_iters=10", "solver.max_iter=300", "solver.steps=[240]", "solver.channels_last=false",
                 "output.checkpoint_period=100000", "test.eval_metrics=[voc07]"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = train_detector(load_config(repo / "configs" / "demo.yaml", overrides))
    finally:
        torch.set_num_threads(threads)
    assert metrics["voc07/mAP"] >= 10.0, metrics["voc07/mAP"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, str(repo / "tools/test_det.py"), "--ckpt",
                           str(tmp_path / "run/model_final.pth"), "--out", str(tmp_path / "test.json")],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    tested = json.loads((tmp_path / "test.json").read_text())
    assert abs(tested["voc07/mAP"] - metrics["voc07/mAP"]) < 0.5
