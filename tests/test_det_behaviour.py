"""The C4 detector's behaviour end to end: output coordinates, DDP equivalence, learning, the test/eval tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from detres.config import DatasetConfig, InputConfig, load_config
from detres.data.detection import build_detection_dataset
from detres.data.loader import build_detection_loader
from detres.data.transforms import to_original
from detres.engine.inference import run_inference
from detres.modeling.faster_rcnn import build_faster_rcnn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _coco_set(root: Path, images: list[tuple[int, int, list[list[int]]]], seed: int = 0) -> Path:
    """A COCO json + jpgs: images [(height, width, boxes XYXY)], textured backgrounds, one filled shape per box."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    data = {"images": [], "annotations": [], "categories": [{"id": 3, "name": "block"}, {"id": 8, "name": "disc"}]}
    for index, (height, width, boxes) in enumerate(images):
        pixels = rng.integers(0, 120, (height, width, 3)).astype(np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            colour = tuple(int(v) for v in rng.integers(150, 255, 3))
            if k % 2 == 0:
                cv2.rectangle(pixels, (x1, y1), (x2 - 1, y2 - 1), colour, -1)
            else:
                cv2.ellipse(pixels, (((x1 + x2) / 2, (y1 + y2) / 2), (x2 - x1, y2 - y1), 0), colour, -1)
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": index + 1,
                                        "category_id": 3 if k % 2 == 0 else 8,
                                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                        "iscrowd": 0})
        cv2.imwrite(str(root / "images" / f"{index}.png"), pixels)
        data["images"].append({"id": index + 1, "file_name": f"{index}.png", "width": width, "height": height})
    (root / "ann.json").write_text(json.dumps(data))
    return root / "ann.json"


# --- 1. output coordinates -------------------------------------------------------------------------------------------

class _FixedFractions(nn.Module):
    """A stand-in detector whose detections are known: per input [3, H', W'], the whole input and the box at
    fractions (.25, .5, .75, 1) of it, in the input's (resized) pixels."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            h, w = image.shape[-2:]
            boxes = torch.tensor([[0.0, 0.0, w, h], [0.25 * w, 0.5 * h, 0.75 * w, h]])
            out.append({"boxes": boxes, "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2])})
        return out


def test_inference_maps_boxes_from_the_resized_input_back_to_original_pixels(tmp_path):
    # odd sizes (x and y factors differ after rounding), a portrait image, and one capped by max_size
    sizes = [(61, 97, [[10, 5, 60, 50]]), (123, 50, [[3, 7, 40, 100]]), (30, 200, [[20, 2, 190, 28]])]
    ann = _coco_set(tmp_path, sizes)
    ds = DatasetConfig(format="coco", ann_file=str(ann), image_dir=str(tmp_path / "images"))
    inputs = InputConfig(test_scale=40, max_size=100)
    dataset = build_detection_dataset(ds, input_cfg=inputs, pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3, train=False)
    loader = build_detection_loader(dataset, batch_size=2, train=False, num_workers=0, aspect_ratio_grouping=False,
                                    seed=0, distributed=False)
    resized = {}
    for images, targets, metas in loader:
        for image, target, meta in zip(images, targets, metas):
            resized[meta["image_id"]] = tuple(image.shape[-2:])
            # the dataset's own resized gt goes back onto the annotation's pixels
            back = to_original({"boxes": target["boxes"], "scores": torch.ones(1), "labels": torch.ones(1)}, meta)
            record = next(r for r in dataset.records if r.image_id == meta["image_id"])
            np.testing.assert_allclose(back["boxes"], record.boxes, atol=1e-3)
    assert resized == {1: (40, 64), 2: (98, 40), 3: (15, 100)}  # resized inputs, not the originals
    detections = run_inference(_FixedFractions(), loader, device=torch.device("cpu"), progress=False)
    for rec in dataset.records:
        w, h = rec.width, rec.height
        expected = [[0, 0, w, h], [0.25 * w, 0.5 * h, 0.75 * w, h]]
        np.testing.assert_allclose(detections[rec.image_id]["boxes"], expected, atol=1e-3)
        assert detections[rec.image_id]["labels"].tolist() == [1, 2]


def _tiny_model_cfg(*extra: str):
    return load_config(None, ["model.num_classes=2", "model.backbone.depth=18", "model.backbone.width=8",
                              "model.rpn.anchor_sizes=[16,32,64]", "model.rpn.pre_nms_topk_test=200",
                              "model.rpn.post_nms_topk_test=30", "test.score_thresh=0.0", *extra])


def test_eval_boxes_lie_inside_each_input_even_when_regression_pushes_them_out():
    torch.manual_seed(0)
    model = build_faster_rcnn(_tiny_model_cfg()).eval()
    with torch.no_grad():
        bias = model.roi_head.predictor.bbox_pred.bias.view(-1, 4)
        bias[:, 0] = 20.0  # dx / 10 = 2 widths to the right
        bias[:, 1] = 20.0  # and 2 heights down
        bias[:, 2:] = 10.0  # widths and heights x e^2
        model.rpn.head.bbox_pred.bias.view(-1, 4)[:, 2:] = 1.0  # proposals grow too
    images = [torch.randn(3, 48, 64), torch.randn(3, 96, 112)]  # the first is padded to the second's size
    with torch.no_grad():
        outputs = model(images)
    for image, out in zip(images, outputs):
        h, w = image.shape[-2:]
        boxes = out["boxes"]
        assert len(boxes) > 0
        assert (boxes >= 0).all() and (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all()
        # clipped at this image's own border, not the padded batch's: the push reaches the true edge
        assert torch.isclose(boxes[:, 2].max(), torch.tensor(float(w))) and torch.isclose(boxes[:, 3].max(),
                                                                                          torch.tensor(float(h)))


# --- 2. DDP on two processes = one process on the same global batch -----------------------------------------------

# every labelled anchor and RoI is used, and every image has the same number of them (225 anchors: no anchor
# ignored, none across the border; 225 proposals + 2 gts), so per-process means average to the global-batch mean
# and the random sampling draws only the order, not the set
DETERMINISTIC_SAMPLING = [
    "model.rpn.batch_size_per_image=100000", "model.rpn.fg_iou_thresh=0.5", "model.rpn.bg_iou_thresh=0.5",
    "model.rpn.ignore_cross_boundary=false", "model.rpn.pre_nms_topk_train=100000",
    "model.rpn.post_nms_topk_train=100000", "model.rpn.nms_thresh=1.0", "model.roi_head.batch_size_per_image=100000",
    "model.roi_head.positive_fraction=0.5"]


def _ddp_overrides(ann: Path, images: Path, run: Path) -> list[str]:
    return [f"data.train.ann_file={ann}", f"data.train.image_dir={images}", f"data.test.ann_file={ann}",
            f"data.test.image_dir={images}", f"output.dir={run}", "output.tensorboard=false", "device=cpu",
            "data.num_workers=0", "model.backbone.width=8", "model.num_classes=2", "data.input.train_scales=[80]",
            "data.input.test_scale=80", "data.input.max_size=128", "model.rpn.anchor_sizes=[16,32,64]",
            "solver.ims_per_batch=2", "solver.max_iter=1", "solver.warmup_iters=0", "solver.clip_grad_norm=0",
            # frozen BN, as the paper's detectors: trained BN normalizes each process's images on their own, which
            # one process on both images does not (SyncBatchNorm would)
            "model.backbone.frozen_bn=true", *DETERMINISTIC_SAMPLING]


@pytest.mark.slow
def test_two_process_ddp_step_equals_one_process_on_the_same_global_batch(tmp_path):
    ann = _coco_set(tmp_path / "data", [(96, 96, [[8, 10, 50, 60], [55, 40, 90, 90]]),
                                        (96, 96, [[30, 5, 80, 35], [5, 50, 45, 92]])], seed=1)
    images = tmp_path / "data" / "images"
    from ddp_step import run_step

    single = torch.load(run_step(tmp_path / "single", _ddp_overrides(ann, images, tmp_path / "run1")),
                        weights_only=True)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(REPO / "tests" / "ddp_step.py"), str(tmp_path / "ddp"),
                           *_ddp_overrides(ann, images, tmp_path / "run2")],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert not single["ddp"] and all(r["ddp"] and r["world_size"] == 2 for r in ranks)
    # the two ranks trained on different images, which together are the single process's batch
    assert len(single["boxes"]) == 2 and all(len(r["boxes"]) == 1 for r in ranks)
    assert not torch.equal(ranks[0]["boxes"][0], ranks[1]["boxes"][0])
    for r, boxes in zip(ranks, single["boxes"]):
        torch.testing.assert_close(r["boxes"][0], boxes)
    # per-process losses differ (different images), their mean is the global batch's loss
    assert abs(ranks[0]["losses"]["loss_cls"] - ranks[1]["losses"]["loss_cls"]) > 1e-3
    for key, value in single["losses"].items():
        mean = (ranks[0]["losses"][key] + ranks[1]["losses"][key]) / 2
        assert mean == pytest.approx(value, rel=1e-4, abs=1e-7), key
    # DDP all-reduced the gradients: both ranks hold the global batch's gradient, and took the same step
    assert single["grads"].keys() == ranks[0]["grads"].keys()
    for name, grad in single["grads"].items():
        scale = grad.abs().max().item() + 1e-12
        torch.testing.assert_close(ranks[0]["grads"][name], ranks[1]["grads"][name], rtol=0, atol=0)
        # float sums in another order: within 0.2% of the tensor's largest gradient (one image's alone is ~100%)
        torch.testing.assert_close(ranks[0]["grads"][name], grad, rtol=1e-3, atol=2e-3 * scale)
    for name, weight in single["weights"].items():
        torch.testing.assert_close(ranks[0]["weights"][name], weight, rtol=0, atol=1e-5)  # steps are ~1e-3


# --- 3. a tiny training run learns; 4. the test and eval tools agree -------------------------------------------------

TRAIN_IMAGES = 8
TRAIN_ITERS = 300
# measured on the 8 training images after 300 iterations, training seeds 0..4: voc07/mAP 60.5, 95.9, 91.4, 65.8,
# 71.0 (coco/AP50 61.0 .. 96.5); untrained 1.6, 0.5, 0.3, 0.2, 0.0. The test runs seed 0, the bars are half of it.
BAR_VOC07 = 30.0
BAR_AP50 = 30.0
DESIGN_KEYS = ["coco/AP", "coco/AP50", "coco/AP75", "coco/APs", "coco/APm", "coco/APl", "voc07/mAP", "voc/mAP"]


def _shapes_overrides(data: Path, run: Path, *extra: str) -> list[str]:
    """The demo config at a tiny size, without flips; the test split is the training images (what 300 CPU
    iterations can learn: generalising to new images needs the demo's full schedule)."""
    ann, images = data / "coco/annotations/instances_train.json", data / "coco/train"
    split = [f"data.{s}.{k}={v}" for s in ("train", "test") for k, v in (("ann_file", ann), ("image_dir", images))]
    return [*split, f"output.dir={run}", "output.tensorboard=false", "device=cpu", "data.num_workers=0",
            "model.backbone.width=8", "data.input.train_scales=[80]", "data.input.test_scale=80",
            "data.input.max_size=128", "data.input.flip=false", "model.rpn.anchor_sizes=[16,32,64]",
            "model.rpn.post_nms_topk_train=100", "model.rpn.post_nms_topk_test=50",
            "model.roi_head.batch_size_per_image=64", "solver.ims_per_batch=2",
            f"solver.steps=[{int(TRAIN_ITERS * 0.85)}]", "solver.warmup_iters=20", "output.checkpoint_period=100000",
            "output.log_period=100000", "test.eval_metrics=[coco,voc07,voc]", *extra]


@pytest.fixture(scope="module")
def shapes_runs(tmp_path_factory):
    """(data, trained run folder, metrics before training, metrics after TRAIN_ITERS iterations)."""
    from detres.engine.train import train_detector

    root = tmp_path_factory.mktemp("shapes_e2e")
    data = make_shapes.generate(root / "data", seed=1, num_train=TRAIN_IMAGES, num_val=1, min_size=64, max_size=96)
    before = train_detector(load_config(REPO / "configs/demo.yaml",
                                        _shapes_overrides(data, root / "untrained", "solver.max_iter=0")))
    trained = train_detector(load_config(REPO / "configs/demo.yaml",
                                         _shapes_overrides(data, root / "trained", f"solver.max_iter={TRAIN_ITERS}")))
    return data, root / "trained", before, trained


@pytest.mark.slow
def test_a_tiny_training_run_learns_to_detect_the_shapes(shapes_runs):
    _, _, before, after = shapes_runs
    assert before["voc07/mAP"] < 5.0  # an untrained detector finds next to nothing
    assert after["voc07/mAP"] > BAR_VOC07 and after["coco/AP50"] > BAR_AP50
    assert after["voc07/mAP"] > before["voc07/mAP"] + 20.0


def _run_tool(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_test_tool_writes_results_and_metrics_that_the_eval_tool_reproduces(shapes_runs, tmp_path):
    data, run, _, trained = shapes_runs
    _run_tool(str(REPO / "tools/test_det.py"), "--cfg", str(REPO / "configs/demo.yaml"), "--ckpt",
              str(run / "model_final.pth"), "--out", str(tmp_path / "m.json"), *_shapes_overrides(data, run))
    metrics = json.loads((tmp_path / "m.json").read_text())
    results = json.loads((tmp_path / "m_detections.json").read_text())
    # the metrics file: one flat object, DESIGN.md's keys, percent
    expected = DESIGN_KEYS + [f"voc07/AP/{name}" for name in make_shapes.CLASSES]
    assert set(expected) <= set(metrics) and all(k.split("/")[0] in ("coco", "voc07", "voc") for k in metrics)
    assert all(v is None or 0.0 <= v <= 100.0 for v in metrics.values())
    assert metrics["voc07/mAP"] > BAR_VOC07  # the tool's (BN-folded) model scores as the trained one
    assert metrics["voc07/mAP"] == pytest.approx(trained["voc07/mAP"], abs=2.0)
    # the results file: COCO results with the dataset's own (non-contiguous) category ids, xywh in image pixels
    gt = json.loads((data / "coco/annotations/instances_train.json").read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    assert results and {r["category_id"] for r in results} <= set(make_shapes.CATEGORY_IDS)
    assert len({r["category_id"] for r in results}) >= 4 and max(r["category_id"] for r in results) > 6
    for r in results:
        x, y, w, h = r["bbox"]
        width, height = sizes[r["image_id"]]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= width + 1e-3 and y + h <= height + 1e-3
    # the eval tool on that results file gives the same numbers
    _run_tool(str(REPO / "tools/eval_det.py"), "--gt", str(data / "coco/annotations/instances_train.json"),
              "--results", str(tmp_path / "m_detections.json"), "--metric", "coco", "--metric", "voc07",
              "--metric", "voc", "--out", str(tmp_path / "e.json"))
    again = json.loads((tmp_path / "e.json").read_text())
    assert again.keys() == metrics.keys()
    for key, value in metrics.items():  # NaN (no ground truth of a size) is written as null by both
        assert again[key] == (value if value is None else pytest.approx(value, abs=1e-9)), key
