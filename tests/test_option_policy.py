"""The options policy on hand-made configs: architecture keys come from the checkpoint and a differing one is refused
naming both values; test-time model keys apply; an option without the option it needs is refused; an export folder's
baked values are compared with the run's; every policy row names a real config key."""

import logging

import pytest

from detres.config import load_config
from detres.deploy.export import check_exportable
from detres.deploy.option_policy import (
    BAKED,
    POLICY,
    REFUSED,
    baked_values,
    check_baked,
    check_options,
    merge_model_keys,
    value,
)
from detres.errors import ConfigError


def test_test_time_model_keys_apply_and_architecture_keys_are_refused(caplog):
    stored = load_config(None, ["model.backbone.depth=50", "model.rpn.post_nms_topk_test=300"])
    user = load_config(None, ["model.backbone.depth=50", "model.rpn.post_nms_topk_test=1000",
                              "model.rpn.nms_thresh=0.6", "model.rpn.batch_size_per_image=64",
                              "model.num_classes=0"])
    with caplog.at_level(logging.INFO, logger="detres.options"):
        merge_model_keys(user, stored, where="checkpoint x.pth")
    assert stored.model.rpn.post_nms_topk_test == 1000 and stored.model.rpn.nms_thresh == 0.6
    assert stored.model.rpn.batch_size_per_image == 256  # training-only: left as the checkpoint has it, and logged
    assert "model.rpn.batch_size_per_image=64" in caplog.text
    assert stored.model.num_classes == 80  # 0 (from the data) matches any checkpoint
    with pytest.raises(ConfigError, match=r"model\.backbone\.depth=101 differs from the checkpoint's 50"):
        merge_model_keys(load_config(None), stored, where="checkpoint x.pth")
    with pytest.raises(ConfigError, match=r"model\.roi_head\.context=True differs from the checkpoint's False"):
        merge_model_keys(load_config(None, ["model.backbone.depth=50", "model.roi_head.context=true"]), stored,
                         where="checkpoint x.pth")


@pytest.mark.parametrize("override", ["test.box_vote=false", "test.multiscale_rpn_scales=adjacent",
                                      "test.tile_overlap=0.5"])
def test_an_option_without_the_option_it_needs_is_refused_on_every_backend(override):
    key = override.split("=")[0]
    for backend in ("torch", "onnxruntime"):
        with pytest.raises(ConfigError, match=rf"{key}=.* acts only with"):
            check_options(load_config(None, [override]), backend=backend)


@pytest.mark.parametrize("override", ["test.multiscale_rpn=true", "test.ims_per_batch=2", "test.box_refine=true"])
def test_the_graph_refuses_what_it_does_not_compute_and_eager_computes_it(override):
    cfg = load_config(None, [override])
    check_options(cfg, backend="torch")
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        check_exportable(cfg)
    with pytest.raises(ConfigError, match="test.backend=openvino"):
        check_options(cfg, backend="openvino")


def test_baked_values_are_recorded_and_a_differing_run_is_refused_with_both_values():
    exported = load_config(None, ["test.score_thresh=0.05"])
    recorded = baked_values(exported)
    assert set(recorded) == {row.key for row in POLICY if row.graph == BAKED}
    check_baked(exported, recorded, folder="runs/x")
    with pytest.raises(ConfigError, match=r"test\.score_thresh=0\.3 differs from the value 0\.05 baked into runs/x.*"
                                          r"export again.*test\.backend=torch"):
        check_baked(load_config(None, ["test.score_thresh=0.3"]), recorded, folder="runs/x")


def test_every_row_names_a_config_key_and_refused_rows_have_a_default_that_runs():
    defaults = load_config(None)
    for row in POLICY:
        value(defaults, row.key)  # AttributeError for a key the config does not have
    check_options(defaults, backend="torch")
    check_options(defaults, backend="onnxruntime")
    assert any(row.graph == REFUSED for row in POLICY) and any(row.graph == BAKED for row in POLICY)
