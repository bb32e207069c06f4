"""OpenVINO's speed settings change no detection: the static-shape cache (a folder of two sizes compiles twice and
gives the dynamic model's detections), the throughput hint with streams, and deploy.precision=bf16 (refused on a
CPU without bf16, else detections that overlap fp32's)."""

import pytest
from deploy_helpers import CLASS_MAP, assert_same, tiny_model

from detres.config import DeployConfig
from detres.deploy.export import export_detector
from detres.deploy.loader import open_exported
from detres.errors import ConfigError


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    cfg, model, images = tiny_model(["model.roi_head.pooler=roi_align"])
    out = export_detector(model, cfg, CLASS_MAP, tmp_path_factory.mktemp("ov"), fmt="onnx")
    return out, images[:2]  # two sizes, both with detections


def _open(out, **deploy):
    return open_exported(out, backend="openvino", deploy=DeployConfig(**deploy))[0]


def test_a_folder_of_two_sizes_compiles_twice_and_matches_the_dynamic_model(export):
    out, (big, small) = export
    folder = [big, small, big, small, big, small]
    dynamic = _open(out, static_shapes=0)
    cached = _open(out, static_shapes=8)
    reference = dynamic(folder)
    assert dynamic.compiles == 0
    assert_same(cached(folder), reference, min_detections=6)
    assert cached.compiles == 2  # each size compiled once, at its second image, then reused
    assert_same(cached(folder), reference, min_detections=6)
    assert cached.compiles == 2
    once = _open(out, static_shapes=8)
    once([big])
    assert once.compiles == 0  # a size seen once is never compiled: a folder of all-different sizes pays nothing


def test_the_cache_keeps_the_last_sizes(export):
    out, (big, small) = export
    detector = _open(out, static_shapes=1)
    detector([big, big, small, small, big, big])
    assert detector.compiles == 3  # one slot: the small size evicted the big one, which came back


def test_throughput_hint_runs_a_list_at_once_with_the_same_detections(export):
    out, (big, small) = export
    folder = [big, small, big, small]
    latency = _open(out, static_shapes=0)
    reference = latency(folder)
    streams = _open(out, ov_hint="throughput", ov_streams=2)
    assert (latency.images_per_call, streams.images_per_call) == (1, 2)  # what detres infer hands over per call
    assert_same(streams(folder), reference, min_detections=4)
    assert_same(_open(out, ov_hint="throughput", static_shapes=0)(folder), reference, min_detections=4)


def test_bad_settings_are_refused_naming_the_key(export):
    out, _ = export
    with pytest.raises(ConfigError, match="deploy.ov_streams=2 acts only with deploy.ov_hint=throughput"):
        _open(out, ov_streams=2)
    with pytest.raises(ConfigError, match="deploy.ov_hint='fast'"):
        _open(out, ov_hint="fast")
    with pytest.raises(ConfigError, match="deploy.static_shapes=-1"):
        _open(out, static_shapes=-1)


def test_bf16_runs_where_the_cpu_has_it_and_is_refused_elsewhere(export):
    import openvino as ov

    from detres.deploy.runtime_openvino import bf16_supported
    from detres.perf.agreement import compare_detections

    out, images = export
    if not bf16_supported(ov.Core()):
        with pytest.raises(ConfigError, match="deploy.precision=bf16"):
            _open(out, precision="bf16")
        return
    reference = _open(out)(images)
    ours = _open(out, precision="bf16")(images)
    # bf16 keeps 8 bits of mantissa (relative error ~4e-3 per op): on this calibrated random-weight model most
    # detections stay (issue 25: 8 of 10 on random R-50 weights); half is a loose floor that catches a wrong graph
    agreement = compare_detections(ours, reference, iou_thresh=0.5)
    assert agreement["num_theirs"] >= 4 and agreement["matched_frac"] >= 0.5, agreement


def test_the_predictor_tells_infer_how_many_images_the_runtime_takes_per_call(export):
    """build_predictor's Predictor passes the runtime's images_per_call through to the folder loop (without it,
    detres infer would hand OpenVINO one image at a time under the throughput hint)."""
    from detres.engine.folder_inference import images_per_call
    from detres.engine.predictor import build_predictor, config_for_predictor

    out, _ = export
    for hint, expected in (("deploy.ov_hint=latency", 1), ("deploy.ov_hint=throughput", 2)):
        overrides = ["test.backend=openvino", hint] + (["deploy.ov_streams=2"] if expected == 2 else [])
        cfg = config_for_predictor(None, model_dir=out, overrides=overrides)
        assert images_per_call(build_predictor(cfg, model_dir=out)) == expected
