"""One exported ONNX file gives eager detres's detections in ONNX Runtime and OpenVINO: at two image sizes, on
an image with no detection, with roi_align (aligned=True) and, in a second model, roi_pool with global context."""

import pytest
import torch
from deploy_helpers import CLASS_MAP, assert_same, eager, tiny_model

from detres.deploy.export import export_detector
from detres.deploy.loader import open_exported


def _threshold_between(model, images) -> float:
    """A score threshold that leaves the image with the lowest top score without detections, the others with."""
    tops = sorted(float(d["scores"].max()) for d in eager(model, images))
    assert tops[0] < tops[1]
    return (tops[0] + tops[1]) / 2


@pytest.fixture(scope="module")
def align_export(tmp_path_factory):
    cfg, model, images = tiny_model(["model.roi_head.pooler=roi_align"])
    model.roi_head.score_thresh = cfg.test.score_thresh = _threshold_between(model, images)
    reference = eager(model, images)
    out = export_detector(model, cfg, CLASS_MAP, tmp_path_factory.mktemp("align"), fmt="onnx")
    return out, images, reference


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_align_two_sizes_and_an_empty_image(align_export, backend):
    out, images, reference = align_export
    detector, info = open_exported(out, backend=backend)
    ours = detector(images)
    empty = [i for i, d in enumerate(reference) if len(d["boxes"]) == 0]
    assert len(empty) == 1 and len(ours[empty[0]]["boxes"]) == 0  # empty outputs, no error
    assert sum(len(d["boxes"]) > 0 for d in reference) == 2  # two image sizes with detections
    assert_same(ours, reference, min_detections=2)
    assert info.class_map.names == CLASS_MAP.names


@pytest.fixture(scope="module")
def context_export(tmp_path_factory):
    cfg, model, images = tiny_model(["model.roi_head.pooler=roi_pool", "model.roi_head.context=true"])
    reference = eager(model, images[:2])
    out = export_detector(model, cfg, CLASS_MAP, tmp_path_factory.mktemp("context"), fmt="onnx")
    return out, images[:2], reference


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_roi_pool_with_context(context_export, backend):
    out, images, reference = context_export
    detector, _ = open_exported(out, backend=backend)
    assert_same(detector(images), reference, min_detections=10)


def test_graph_module_equals_eager_in_torch(align_export):
    """The export wrapper itself (before any runtime) computes eager's detections."""
    from detres.deploy.export import exportable_module

    cfg, model, images = tiny_model(["model.roi_head.pooler=roi_align", "model.roi_head.context=true"])
    module = exportable_module(model)
    with torch.no_grad():
        ours = [dict(zip(("boxes", "scores", "labels"), module(image[None]))) for image in images]
    assert_same(ours, eager(model, images), min_detections=10)
