"""int8 in CI: a tiny detector trained on the synthetic shapes, exported with NNCF int8 calibration, run in OpenVINO
int8 beside fp32: the confident detections survive quantization, and `detres test` gives nearly the same mAP."""

import json
import sys
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

pytest.importorskip("nncf")
pytest.importorskip("openvino")

from detres.config import load_config  # noqa: E402
from detres.data.detection import build_split  # noqa: E402
from detres.deploy.export import export_detector  # noqa: E402
from detres.deploy.loader import open_exported  # noqa: E402
from detres.engine.loading import load_detector  # noqa: E402
from detres.engine.train import train_detector  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402
from test_det_behaviour import _shapes_overrides  # noqa: E402

ITERS = 200
# test_det_behaviour's tiny run (its 8 training images are also the test split) at a training scale of 64 with
# fewer RoIs and a higher rate: 200 iterations reach coco/AP50 ~44 in ~25 s on one core
SMALL = ["data.input.train_scales=[64]", "data.input.test_scale=64", "model.roi_head.batch_size_per_image=32",
         "solver.base_lr=0.03", f"solver.max_iter={ITERS}", f"solver.steps=[{int(ITERS * 0.85)}]",
         "test.eval_metrics=[coco]"]
CONFIDENT = 0.5  # the fp32 detections whose survival is checked
KEPT = 0.9  # the fraction of them that int8 must keep (same label, IoU > 0.5)
AP50_DROP = 5.0  # points of coco/AP50 that int8 may lose against fp32 through `detres test`


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(export folder with model.onnx and model_int8.xml, the test images, the trained run's metrics)."""
    root = tmp_path_factory.mktemp("int8")
    data = make_shapes.generate(root / "data", seed=1, num_train=8, num_val=1, min_size=64, max_size=96)
    cfg = load_config(REPO / "configs" / "demo.yaml", [*_shapes_overrides(data, root / "run"), *SMALL])
    metrics = train_detector(cfg)
    model, class_map, stored = load_detector(root / "run" / "model_final.pth")
    backbone = stored.model.backbone
    dataset = build_split(stored.data, "test", pixel_mean=backbone.pixel_mean, pixel_std=backbone.pixel_std,
                          train=False)
    images = [dataset[i][0] for i in range(len(dataset))]
    folder = export_detector(model, stored, class_map, root / "export", fmt="onnx", calibration=images[:4])
    return folder, images, metrics


def _kept(reference: list[dict], quantized: list[dict], min_score: float) -> tuple[int, int]:
    """(how many reference detections scored >= min_score have a quantized one of the same label at IoU > 0.5,
    how many there are)."""
    kept = total = 0
    for ref, q in zip(reference, quantized, strict=True):
        confident = ref["scores"] >= min_score
        boxes, labels = ref["boxes"][confident], ref["labels"][confident]
        total += len(boxes)
        if len(boxes) and len(q["boxes"]):
            iou = box_iou(boxes, q["boxes"]) * (labels[:, None] == q["labels"][None, :])
            kept += int((iou.max(dim=1).values > 0.5).sum())
    return kept, total


@pytest.mark.slow
def test_int8_keeps_the_confident_fp32_detections(exported):
    """At least KEPT (90%) of the fp32 detections scored >= 0.5 have an int8 detection of the same label at
    IoU > 0.5. Why it holds: NNCF quantizes only the convolutions and matrix products (NMS, top-k and the box
    arithmetic stay float32), calibrated on the images' own activation ranges, so a logit moves by a small fraction
    of its range; a detection scored >= 0.5 sits far above the 0.05 score threshold and its class far above the
    others, so int8 moves its score and box a little (on this model scores by up to ~0.2, boxes to IoU >= ~0.6) but
    rarely removes it, while the weak detections near the threshold may come and go (they are not counted).
    Measured: 23 of 23 kept at >= 0.5 and 39 of 40 at >= 0.3; the bound leaves room for one or two of ~20."""
    folder, images, _ = exported
    fp32, info = open_exported(folder, backend="openvino", precision="fp32")
    int8, _ = open_exported(folder, backend="openvino", precision="int8")
    assert info.int8_artifact is not None and info.int8_artifact.is_file()
    reference = [fp32([image])[0] for image in images]
    quantized = [int8([image])[0] for image in images]
    kept, total = _kept(reference, quantized, CONFIDENT)
    assert total >= 10, "the trained model should be confident about its training images"
    assert kept >= KEPT * total, f"int8 kept {kept} of {total} confident fp32 detections"
    # int8 is not fp32 run again: some score differs (else the int8 artifact would not be what ran)
    assert any(not torch.equal(r["scores"], q["scores"]) for r, q in zip(reference, quantized))


@pytest.mark.slow
def test_the_test_tool_with_int8_stays_within_the_bound_of_fp32(exported, tmp_path, monkeypatch):
    """`detres test --model DIR test.backend=openvino deploy.precision=int8` against fp32 on the same folder:
    coco/AP50 drops by at most AP50_DROP (5) points. Measured on this model (2026-12-06, this 2-core machine):
    fp32 44.22, int8 44.05 (-0.17; coco/AP 16.87 -> 18.87); on the demo model (docs/deploy.md) int8 changed mAP@.5
    by +0.82. int8 kernels differ between CPUs (VNNI or not), so the bound is wide: 5 points on these 8 images is
    about one lost detection of the ~40 ground-truth objects."""
    from tools import test_det

    folder, _, _ = exported
    ap50 = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / f"{precision}.json"
        monkeypatch.setattr(sys, "argv", ["test_det.py", "--model", str(folder), "--out", str(out),
                                          "test.backend=openvino", f"deploy.precision={precision}"])
        assert test_det.main() == 0
        ap50[precision] = json.loads(out.read_text())["coco/AP50"]
    assert ap50["fp32"] > 20.0
    assert ap50["int8"] >= ap50["fp32"] - AP50_DROP, ap50
