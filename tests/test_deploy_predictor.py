"""build_predictor: a checkpoint exported on the fly for test.backend=onnxruntime gives the torch backend's
detections; unknown formats and backends are refused with what is expected."""

import pytest
from deploy_helpers import CLASS_MAP, assert_same, eager, tiny_model

from detres.config import config_to_dict
from detres.deploy.export import export_detector
from detres.engine.predictor import build_predictor
from detres.errors import ConfigError, UserError
from detres.io.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg, model, images = tiny_model(["model.roi_head.pooler=roi_align"])
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(cfg), "class_map": CLASS_MAP.to_dict()},
                    path)
    return cfg, model, images, str(path)


@pytest.mark.slow
def test_on_the_fly_export_equals_torch(checkpoint, tmp_path):
    cfg, model, images, path = checkpoint
    torch_side = build_predictor(cfg, ckpts=[path])
    reference = eager(torch_side, images)  # one image per call: eager batches pad to a common size
    cfg.test.backend = "onnxruntime"
    onnx_side = build_predictor(cfg, ckpts=[path])
    assert onnx_side.class_map.names == CLASS_MAP.names
    assert_same(eager(onnx_side, images), reference, min_detections=10)
    with pytest.raises(UserError, match="--format 'torch-export': expected one of onnx"):
        export_detector(model, cfg, CLASS_MAP, tmp_path / "pt2", fmt="torch-export")


def test_refusals(checkpoint):
    cfg, _, _, path = checkpoint
    with pytest.raises(UserError, match="either --ckpt"):
        build_predictor(cfg)
    refine = cfg.__class__(**{**cfg.__dict__})
    refine.test = cfg.test.__class__(**{**cfg.test.__dict__, "backend": "openvino", "box_refine": True})
    with pytest.raises(ConfigError, match="test.box_refine"):
        build_predictor(refine, ckpts=[path])
    refine.test.backend = "tensorrt"
    with pytest.raises(ConfigError, match="test.backend='tensorrt'"):
        build_predictor(refine, ckpts=[path])
