"""Table 13 evaluation path: the whole-image baseline row and classes ranked by a classification checkpoint."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from detres.config import config_to_dict, load_config
from detres.io.checkpoint import save_checkpoint
from detres.localization.data import read_loc_split
from detres.localization.evaluate import evaluate_localization, format_table13
from detres.modeling.resnet import build_resnet

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loc_root(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("make_loc_shapes", REPO / "datasets" / "make_loc_shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate(tmp_path_factory.mktemp("loc") / "shapes", seed=2, num_train=1, num_val=4, size=48)


def _whole_image_hit(rec) -> bool:
    """Hand rule: a box inside the image has IoU = its area / the image's area with the whole-image box."""
    import cv2
    h, w = cv2.imread(rec.image_path).shape[:2]
    areas = (rec.boxes[:, 2] - rec.boxes[:, 0]) * (rec.boxes[:, 3] - rec.boxes[:, 1])
    return bool((areas / (w * h) >= 0.5).any())


def test_whole_image_row_and_classifier_ranked_top5(loc_root, tmp_path):
    cfg = load_config(REPO / "configs" / "loc_demo.yaml", [f"data.test.root={loc_root}", "device=cpu"])
    # a classifier that ranks every image 6, 5, 4, 3, 2, 1: its fc ignores the features
    net = build_resnet(cfg.model.backbone, 6)
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.copy_(torch.arange(6.0))
    ckpt = tmp_path / "cls.pth"
    save_checkpoint({"model": net.state_dict(), "config": config_to_dict(cfg)}, ckpt)
    metrics, rows = evaluate_localization(cfg, rows=["whole_image"], cls_ckpt=str(ckpt), progress=False)
    records, _ = read_loc_split(loc_root, "val")
    hit = np.array([_whole_image_hit(r) for r in records])
    labels = np.array([r.label for r in records])
    assert 0 < hit.sum() < len(records)  # the set has both kinds of image, so the test can fail
    assert metrics["loc/gt_cls_err"] == pytest.approx(100 * (1 - hit.mean()))
    assert metrics["loc/top1_err"] == pytest.approx(100 * (1 - (hit & (labels == 6)).mean()))
    assert metrics["loc/top5_err"] == pytest.approx(100 * (1 - (hit & (labels >= 2)).mean()))
    guesses = rows["whole_image"].guesses[records[0].image_id]
    assert [c for c, _ in guesses] == [6, 5, 4, 3, 2]
    table = format_table13(metrics, ["whole_image"], loc_network="-", cls_network="ResNet")
    assert "LOC err on GT CLS" in table and f"{metrics['loc/top5_err']:.1f}" in table


def test_classifier_classes_are_matched_through_the_checkpoints_class_names(loc_root, tmp_path):
    cfg = load_config(REPO / "configs" / "loc_demo.yaml", [f"data.test.root={loc_root}", "device=cpu"])
    net = build_resnet(cfg.model.backbone, 6)
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.copy_(torch.arange(6.0))  # output 5 wins, then 4, ...
    ckpt = tmp_path / "cls.pth"
    names = [f"n0000000{i}" for i in range(6, 0, -1)]  # output i is synset 6 - i: output 5 = n00000001 = label 1
    save_checkpoint({"model": net.state_dict(), "config": config_to_dict(cfg), "class_names": names}, ckpt)
    _, rows = evaluate_localization(cfg, rows=["whole_image"], cls_ckpt=str(ckpt), max_images=2, progress=False)
    for guesses in rows["whole_image"].guesses.values():
        assert [c for c, _ in guesses] == [1, 2, 3, 4, 5]
