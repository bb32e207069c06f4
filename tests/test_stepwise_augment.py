"""Step-wise training with data.augment: the Fast R-CNN steps' stored proposals move with the same augmentation
draw as the image and its boxes (then the same resize and flip), and a transform whose draw reads the boxes is
refused before step 1."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from detres.config import load_config
from detres.data.detection import build_split
from detres.data.proposals import ProposalDataset
from detres.engine.train import train_detector
from detres.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402
from test_engine_det import tiny_overrides  # noqa: E402

# every kind of geometry: flips, a quarter turn, a rotation with zoom, a crop that ignores the boxes
GEOMETRY = ("data.augment=[{__class_fullname__: VerticalFlip, p: 0.5}, {__class_fullname__: RandomRotate90, p: 1.0},"
            " {__class_fullname__: Affine, rotate: [-20, 20], scale: [0.8, 1.2], p: 1.0},"
            " {__class_fullname__: RandomResizedCrop, size: [72, 80], scale: [0.5, 1.0], p: 1.0}]")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes.generate(tmp_path_factory.mktemp("shapes"), seed=4, num_train=12, num_val=2,
                                min_size=64, max_size=96)


def _train_set(cfg):
    return build_split(cfg.data, "train", pixel_mean=cfg.model.backbone.pixel_mean,
                       pixel_std=cfg.model.backbone.pixel_std, train=True, seed=cfg.seed)


def test_proposals_follow_the_augmentation_draw_exactly(shapes, tmp_path):
    """Stored proposals that equal an image's ground-truth boxes (plus a whole-image box) reach the model equal to
    its augmented, resized, flipped boxes, to float precision; the image and boxes are the same as without
    proposals (carrying them changes no draw). Before, the proposals followed only the resize and flip, so after a
    quarter turn they stood where the objects were not."""
    cfg = load_config(REPO / "configs" / "demo.yaml", tiny_overrides(shapes, tmp_path, GEOMETRY))
    plain = _train_set(cfg)
    stored = {str(r.image_id): torch.from_numpy(np.concatenate([r.boxes, [[0, 0, r.width, r.height]]]))
              .float() for r in plain.records}
    joined = ProposalDataset(dataset=_train_set(cfg), proposals=stored)
    checked = 0
    for epoch in range(2):
        plain.set_epoch(epoch)
        joined.set_epoch(epoch)
        for i in range(len(plain)):
            image, target, meta = plain[i]
            image_p, target_p, meta_p = joined[i]
            assert torch.equal(image, image_p) and torch.equal(target["boxes"], target_p["boxes"])
            assert meta == meta_p
            boxes, proposals = target["boxes"], target_p["proposals"]
            # each kept box's twin is kept too (same visibility), in the same order, before the whole-image box
            torch.testing.assert_close(proposals[: len(boxes)], boxes, rtol=0, atol=1e-4)
            assert len(proposals) == len(boxes) + 1
            height, width = image.shape[-2:]
            assert (proposals[:, 0] >= 0).all() and (proposals[:, 2] <= width + 1e-3).all()
            assert (proposals[:, 1] >= 0).all() and (proposals[:, 3] <= height + 1e-3).all()
            checked += len(boxes)
    assert checked > 20
    assert "proposals" not in plain[0][1]  # the caller's dataset stays without proposals


def test_without_augment_the_proposals_are_only_resized_and_flipped(shapes, tmp_path):
    cfg = load_config(REPO / "configs" / "demo.yaml", tiny_overrides(shapes, tmp_path))
    dataset = _train_set(cfg)
    rec = dataset.records[0]
    stored = {str(r.image_id): torch.tensor([[4.0, 6.0, 30.0, 40.0]]) for r in dataset.records}
    image, target, meta = ProposalDataset(dataset=dataset, proposals=stored)[0]
    sy, sx = meta["scale"]
    x1, x2 = 4.0 * sx, 30.0 * sx
    if meta["flipped"]:
        x1, x2 = image.shape[-1] - x2, image.shape[-1] - x1
    torch.testing.assert_close(target["proposals"], torch.tensor([[x1, 6.0 * sy, x2, 40.0 * sy]]))
    assert meta["image_id"] == rec.image_id


def test_a_box_dependent_crop_is_refused_before_step_1(shapes, tmp_path):
    crop = "data.augment=[{__class_fullname__: RandomSizedBBoxSafeCrop, height: 64, width: 64, p: 0.5}]"
    cfg = load_config(REPO / "configs" / "demo.yaml", tiny_overrides(shapes, tmp_path / "run", crop,
                                                                       "solver.mode=stepwise"))
    with pytest.raises(ConfigError, match="solver.mode=stepwise with RandomSizedBBoxSafeCrop in data.augment"):
        train_detector(cfg)
    assert not (tmp_path / "run").exists()
