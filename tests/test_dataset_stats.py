"""Dataset statistics and anchor fitting: coverage against a hand computation and against a brute force over the
whole anchor grid; fitting reaches its coverage on sets whose box sizes are known; the tool writes its files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detres.config import load_config
from detres.data.records import ClassMap, DetRecord
from detres.data.stats import dataset_summary, scaled_boxes
from detres.modeling.anchor_fit import best_anchor_iou, coverage, fit_anchors_and_scale
from detres.modeling.anchors import AnchorGenerator

REPO = Path(__file__).resolve().parents[1]


def _records(boxes_per_image: list[list[list[float]]], side: int = 512, labels=None) -> list[DetRecord]:
    out = []
    for i, boxes in enumerate(boxes_per_image):
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        lab = np.asarray(labels[i] if labels else [1] * len(b), np.int64)
        out.append(DetRecord(f"img{i}.png", i, side, side, b, lab, np.zeros(len(b), bool)))
    return out


def _brute_force_best_iou(records: list[DetRecord], scale: int, max_size: int, sizes, ratios) -> torch.Tensor:
    """Best IoU of every box with every anchor of its image's whole feature-map grid (no nearest-point shortcut)."""
    gen = AnchorGenerator(sizes=sizes, aspect_ratios=ratios, stride=16)
    best = []
    for rec in records:
        table = scaled_boxes([rec], scales=[scale], max_size=max_size)
        h, w = table.image_hw[0]
        grid = gen.grid(int(np.ceil(h / 16)), int(np.ceil(w / 16)))
        best.append(box_iou(torch.from_numpy(table.boxes), grid).max(dim=1).values)
    return torch.cat(best)


def _known_set(sides: list[int], ratios: list[float], count: int, seed: int) -> list[DetRecord]:
    """`count` boxes, 4 per 512x512 image, of side sqrt(w*h) drawn from `sides` and h/w from `ratios`."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count // 4):
        boxes = []
        for _ in range(4):
            s, r = float(rng.choice(sides)), float(rng.choice(ratios))
            w, h = s / np.sqrt(r), s * np.sqrt(r)
            x, y = rng.uniform(0, 512 - w), rng.uniform(0, 512 - h)
            boxes.append([x, y, x + w, y + h])
        images.append(boxes)
    return _records(images)


def test_coverage_matches_a_hand_computation():
    # anchors: size 32, ratios 1 and 0.5 -> cell anchors [-16,-16,16,16] and [-23,-11,23,11] (corners rounded)
    boxes = [[0, 0, 32, 32],    # centre (16, 16) on a grid point: IoU 1 with the square anchor
             [4, 4, 36, 36],    # centre (20, 20), nearest point (16, 16): overlap 28 x 28 -> 784 / 1264
             [0, 100, 64, 132]]  # 64x32 centred on (32, 116) -> point (32, 112): vs [9,101,55,123] 46x22 anchor
    table = scaled_boxes(_records([boxes]), scales=[512], max_size=512)
    best = best_anchor_iou(table, sizes=[32], ratios=[0.5, 1.0])
    # third box: the 46x22 anchor sits at y 101..123 inside the box's 100..132, x 9..55 inside 0..64 -> 1012 / 2048
    expected = torch.tensor([1.0, 784 / 1264, 1012 / 2048])
    torch.testing.assert_close(best, expected)
    assert coverage(table, sizes=[32], ratios=[0.5, 1.0]) == {"iou>=0.5": round(2 / 3, 4), "iou>=0.7": round(1 / 3, 4)}


def test_nearest_grid_point_equals_brute_force_over_the_whole_grid():
    records = _known_set([20, 40, 90, 200, 300], [0.4, 1.0, 2.5], 80, seed=1)
    records.append(_records([[[490, 495, 512, 512]]])[0])  # at the far corner: the nearest point is the last one
    for scale, sizes, ratios in ((512, [32, 64, 128, 256], [0.5, 1.0, 2.0]), (300, [50, 100], [1.0])):
        table = scaled_boxes(records, scales=[scale], max_size=10_000)
        torch.testing.assert_close(best_anchor_iou(table, sizes=sizes, ratios=ratios),
                                   _brute_force_best_iou(records, scale, 10_000, sizes, ratios))


def test_fitting_reaches_its_coverage_on_known_sizes():
    records = _known_set([56, 112, 224], [0.5, 1.0, 2.0], 200, seed=0)
    default = coverage(scaled_boxes(records, scales=[512], max_size=512), sizes=[128, 256, 512],
                       ratios=[0.5, 1.0, 2.0])
    assert default["iou>=0.5"] < 0.8  # the paper's anchors miss the 56-px boxes
    fit = fit_anchors_and_scale(records, train_scales=[512], test_scale=512, max_size=512, target=0.99)
    assert fit.reached and fit.train_scales == [512] and fit.test_scale == 512  # no upscale needed
    assert fit.num_anchors <= 9
    best = _brute_force_best_iou(records, 512, 512, fit.anchor_sizes, fit.aspect_ratios)
    assert float((best >= 0.5).float().mean()) >= 0.99
    assert fit.coverage["iou>=0.5"] == round(float((best >= 0.5).float().mean()), 4)
    # the overrides it prints are valid config lines giving the same anchors
    cfg = load_config(REPO / "configs" / "demo.yaml", fit.overrides())
    assert list(cfg.model.rpn.anchor_sizes) == fit.anchor_sizes and list(cfg.data.input.train_scales) == [512]


def test_small_boxes_make_it_upscale_the_input():
    records = _known_set([14, 20, 28], [1.0], 120, seed=2)  # below ~40 px no stride-16 anchor reaches IoU 0.5
    fit = fit_anchors_and_scale(records, train_scales=[512], test_scale=512, max_size=512, target=0.99)
    assert fit.reached and fit.train_scales[0] > 512 and fit.test_scale == fit.train_scales[0]
    assert fit.max_size == fit.train_scales[0]  # square images: the cap grows with the scale
    best = _brute_force_best_iou(records, fit.train_scales[0], fit.max_size, fit.anchor_sizes, fit.aspect_ratios)
    assert float((best >= 0.5).float().mean()) >= 0.99
    kept = fit_anchors_and_scale(records, train_scales=[512], test_scale=512, max_size=512, max_upscale=1.0)
    assert not kept.reached and kept.train_scales == [512]  # honest: the best found, not a false claim


def test_summary_counts():
    records = _records([[[0, 0, 10, 20], [5, 5, 25, 15]], [], [[0, 0, 40, 40]]], side=100, labels=[[1, 2], [], [2]])
    records[2].ignore = np.array([True])
    cmap = ClassMap(names=["a", "b"], dataset_ids=[1, 2])
    table = scaled_boxes(records, scales=[200], max_size=1000)  # 100 -> 200: boxes double
    stats = dataset_summary(records, cmap, table)
    assert (stats["images"], stats["images_without_boxes"], stats["boxes"], stats["boxes_ignored"]) == (3, 2, 2, 1)
    assert stats["boxes_per_class"] == {"a": 1, "b": 1}
    assert stats["box_side_px_at_train_scale"]["min"] == round(float(np.sqrt(20 * 40)), 3)
    assert stats["box_aspect_ratio_h_over_w"]["max"] == 2.0


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fit", [False, True])
def test_tool_writes_stats_and_histograms(tmp_path, monkeypatch, capsys, fit):
    records = _known_set([56, 112, 224], [0.5, 1.0, 2.0], 40, seed=3)
    coco = {"images": [{"id": r.image_id, "file_name": r.image_path, "width": 512, "height": 512} for r in records],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 10 * r.image_id + j, "image_id": r.image_id, "category_id": 1, "iscrowd": 0,
                             "area": float((b[2] - b[0]) * (b[3] - b[1])),
                             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                            for r in records for j, b in enumerate(r.boxes)]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"_base_: {REPO / 'configs' / 'demo.yaml'}\n"
                   f"data: {{train: {{ann_file: {tmp_path / 'ann.json'}, image_dir: {tmp_path}}},\n"
                   f"       input: {{train_scales: [512], test_scale: 512, max_size: 512}}}}\n")
    argv = ["dataset_stats.py", "--cfg", str(cfg), "--out", str(tmp_path / "out")] + (["--fit-anchors"] if fit else [])
    monkeypatch.setattr(sys, "argv", argv)
    assert _tool("dataset_stats").main() == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["images"] == 10 and stats["boxes"] == 40
    expected = coverage(scaled_boxes(records, scales=[512], max_size=512), sizes=[32, 64, 128, 256],
                        ratios=[0.5, 1.0, 2.0])
    assert stats["anchor_coverage"]["iou>=0.5"] == expected["iou>=0.5"]
    for png in ("box_sizes.png", "aspect_ratios.png", "boxes_per_image.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    if fit:
        assert stats["fitted_anchors"]["reached_target"] and stats["fitted_anchors"]["iou>=0.5"] >= 0.99
        assert "model.rpn.anchor_sizes=[" in out and "anchor_sizes: [" in out
    else:
        assert "fitted_anchors" not in stats


def test_bad_options_are_one_line_errors(monkeypatch):
    from detres.errors import DataError, UserError

    monkeypatch.setattr(sys, "argv", ["dataset_stats.py", "--cfg", str(REPO / "configs" / "demo.yaml"),
                                      "--fit-anchors", "--target", "1.5"])
    with pytest.raises(UserError, match="--target must be a fraction"):
        _tool("dataset_stats").main()
    with pytest.raises(DataError, match="no trainable boxes"):
        scaled_boxes(_records([[]]), scales=[512], max_size=512)
