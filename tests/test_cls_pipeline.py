"""Classification pipeline: 10-crop and fully-convolutional testing by hand, training on the synthetic set,
and --resume reproducing an uninterrupted run."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from detres.config import load_config
from detres.data.classification import build_cls_dataset
from detres.engine.cls_trainer import train_classifier
from detres.evaluation.classification import fully_conv_logits, image_scores, ten_crops, topk_errors
from detres.io.checkpoint import load_checkpoint
from detres.modeling.resnet import resnet18

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_cls_shapes  # noqa: E402


def test_ten_crops_equal_crops_taken_by_hand():
    image = torch.arange(3 * 6 * 8, dtype=torch.float32).reshape(3, 6, 8)
    crops = ten_crops(image, 4)
    assert crops.shape == (10, 3, 4, 4)
    assert torch.equal(crops[0], image[:, 0:4, 0:4])  # top-left
    assert torch.equal(crops[1], image[:, 0:4, 4:8])  # top-right
    assert torch.equal(crops[2], image[:, 2:6, 0:4])  # bottom-left
    assert torch.equal(crops[3], image[:, 2:6, 4:8])  # bottom-right
    assert torch.equal(crops[4], image[:, 1:5, 2:6])  # centre
    for i in range(5):
        assert torch.equal(crops[5 + i], crops[i].flip(-1))  # mirrored


def test_fully_convolutional_at_one_scale_equals_centre_crop_testing():
    model = resnet18(width=8, num_classes=5).eval()
    image = np.random.default_rng(0).normal(size=(64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        centre = image_scores(model, image, mode="center", crop_size=64, scales=[64])
        fully = image_scores(model, image, mode="fullyconv", crop_size=64, scales=[64])
        logits = fully_conv_logits(model, torch.from_numpy(image.transpose(2, 0, 1).copy()))
    assert torch.allclose(centre, fully, atol=1e-6)
    assert logits.shape == (5,)


def test_topk_errors_by_hand():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5]])
    errors = topk_errors(scores, torch.tensor([1, 2, 0]), ks=(1, 2))
    assert errors["cls/top1_err"] == pytest.approx(100 * 2 / 3)
    assert errors["cls/top2_err"] == pytest.approx(100 * 1 / 3)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_cls_shapes.generate(tmp_path_factory.mktemp("shapes_cls"), seed=0, train_per_class=40,
                                    val_per_class=10, size=48)


def _cfg(data, run, *extra):
    return load_config(REPO / "configs" / "cls_demo.yaml", [
        f"data.train.root={data}", f"data.test.root={data}", f"output.dir={run}", "output.tensorboard=false",
        "data.input.crop_size=40", "data.input.resize_range=[44,56]", "data.input.test_resize=48",
        "model.backbone.width=8", *extra])


def test_resume_reproduces_the_uninterrupted_run(shapes, tmp_path):
    extra = ["solver.max_epochs=2", "solver.steps=[100]"]
    full = train_classifier(_cfg(shapes, tmp_path / "full", *extra))
    train_classifier(_cfg(shapes, tmp_path / "split", "solver.max_epochs=1", "solver.steps=[100]"))
    # the 1-epoch run's last checkpoint is its final one; continue it to 2 epochs as a resumed run
    resumed = train_classifier(_cfg(shapes, tmp_path / "split", *extra), resume=True)
    assert resumed == full
    a = load_checkpoint(tmp_path / "full" / "model_final.pth")["model"]
    b = load_checkpoint(tmp_path / "split" / "model_final.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    cfg = _cfg(tmp_path / "nowhere", tmp_path / "run")
    with pytest.raises(Exception, match=r"classification split folder not found: .*nowhere"):
        build_cls_dataset(cfg.data.train, input_cfg=cfg.data.input, pixel_mean=[0.5] * 3, pixel_std=[0.2] * 3,
                          train=True)
