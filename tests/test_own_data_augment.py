"""data.augment: albumentations from YAML moves boxes with the pixels, drops boxes pushed out, resumes bit for bit."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from detres.config import load_config
from detres.data.augment import apply_augment, build_augment
from detres.data.detection import build_detection_dataset
from detres.data.image_io import read_image_rgb
from detres.data.transforms import normalize_to_tensor
from detres.engine.train import train_detector
from detres.errors import ConfigError
from detres.io.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402
from test_engine_det import tiny_overrides  # noqa: E402


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    # square 64x64 images: a training scale of 64 leaves every pixel where it is (resize factor 1)
    return make_shapes.generate(tmp_path_factory.mktemp("shapes"), seed=3, num_train=8, num_val=2,
                                min_size=64, max_size=64)


def _overrides(data: Path, run: Path, *extra: str) -> list[str]:
    """The engine tests' tiny run at a training scale of 64 (the square 64x64 images keep their pixels)."""
    return tiny_overrides(data, run, "data.input.train_scales=[64]", "data.input.test_scale=64", *extra)


def _train_set(cfg):
    return build_detection_dataset(cfg.data.train, input_cfg=cfg.data.input, pixel_mean=cfg.model.backbone.pixel_mean,
                                   pixel_std=cfg.model.backbone.pixel_std, train=True, seed=cfg.seed,
                                   augment=cfg.data.augment, augment_min_visibility=cfg.data.augment_min_visibility)


def test_vertical_flip_written_in_yaml_equals_the_hand_flipped_image_and_boxes(shapes, tmp_path):
    yaml_file = tmp_path / "flip.yaml"
    yaml_file.write_text(f"_base_: {REPO / 'configs/demo.yaml'}\n"
                         "data:\n  augment:\n    - {__class_fullname__: VerticalFlip, p: 1.0}\n")
    cfg = load_config(yaml_file, _overrides(shapes, tmp_path / "run", "data.input.flip=false"))
    dataset = _train_set(cfg)
    for index in range(3):
        rec = dataset.records[index]
        image, target, _ = dataset[index]
        rgb = read_image_rgb(rec.image_path)
        expected = normalize_to_tensor(rgb[::-1].copy(), cfg.model.backbone.pixel_mean, cfg.model.backbone.pixel_std)
        torch.testing.assert_close(image, expected, rtol=0, atol=0)
        flipped = rec.boxes.copy()
        flipped[:, 1], flipped[:, 3] = rec.height - rec.boxes[:, 3], rec.height - rec.boxes[:, 1]
        np.testing.assert_allclose(target["boxes"].numpy(), flipped, atol=1e-4)
        np.testing.assert_array_equal(target["labels"].numpy(), rec.labels)
        np.testing.assert_array_equal(target["ignore"].numpy(), rec.ignore)


def test_boxes_pushed_out_are_clipped_or_dropped_by_the_visibility_threshold():
    rgb = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    # crop to x < 50: box A stays whole, B keeps 10/20 = 50% of its width, C keeps 5/25 = 20%, D leaves the image
    boxes = np.array([[10, 10, 40, 40], [40, 10, 60, 40], [45, 50, 70, 80], [60, 60, 90, 90]], np.float32)
    labels, ignore = np.array([1, 2, 3, 4]), np.array([False, True, False, False])
    crop = [{"__class_fullname__": "Crop", "x_min": 0, "y_min": 0, "x_max": 50, "y_max": 100, "p": 1.0}]
    image, out, out_labels, out_ignore = apply_augment(build_augment(crop, min_visibility=0.3), rgb, boxes, labels,
                                                       ignore, np.random.default_rng(0))
    assert image.shape == (100, 50, 3)
    np.testing.assert_array_equal(image, rgb[:, :50])
    np.testing.assert_allclose(out, [[10, 10, 40, 40], [40, 10, 50, 40]])
    assert out_labels.tolist() == [1, 2] and out_ignore.tolist() == [False, True]
    _, out, out_labels, _ = apply_augment(build_augment(crop, min_visibility=0.0), rgb, boxes, labels, ignore,
                                          np.random.default_rng(0))
    np.testing.assert_allclose(out, [[10, 10, 40, 40], [40, 10, 50, 40], [45, 50, 50, 80]])
    assert out_labels.tolist() == [1, 2, 3]


AERIAL_LIKE = ("data.augment=[{__class_fullname__: VerticalFlip, p: 0.5}, {__class_fullname__: RandomRotate90, "
               "p: 0.5}, {__class_fullname__: RandomBrightnessContrast, p: 0.5}, {__class_fullname__: Affine, "
               "scale: [0.75, 1.25], p: 0.5}]")


def test_draws_are_a_function_of_seed_epoch_and_index(shapes, tmp_path):
    cfg = load_config(REPO / "configs/demo.yaml", _overrides(shapes, tmp_path / "run", AERIAL_LIKE))
    first, second = _train_set(cfg), _train_set(cfg)
    for index in (5, 0, 3):  # any order: a draw depends on nothing that came before it
        torch.testing.assert_close(first[index][0], second[index][0], rtol=0, atol=0)
    second.set_epoch(1)
    assert any(not torch.equal(first[i][0], second[i][0]) for i in range(len(first))), "epoch 1 draws like epoch 0"
    plain = _train_set(load_config(REPO / "configs/demo.yaml", _overrides(shapes, tmp_path / "run")))
    assert any(not torch.equal(first[i][0], plain[i][0]) for i in range(len(first))), "no augmentation"


def test_resume_with_augmentation_and_workers_equals_the_uninterrupted_run_bit_for_bit(shapes, tmp_path):
    full = train_detector(load_config(REPO / "configs/demo.yaml",
                                      _overrides(shapes, tmp_path / "full", AERIAL_LIKE, "solver.max_iter=6")))
    # the interrupted run loads in a worker process, the uninterrupted one in the main process
    split = _overrides(shapes, tmp_path / "split", AERIAL_LIKE, "data.num_workers=1")
    train_detector(load_config(REPO / "configs/demo.yaml", [*split, "solver.max_iter=3"]))
    resumed = train_detector(load_config(REPO / "configs/demo.yaml", [*split, "solver.max_iter=6"]), resume=True)
    a = load_checkpoint(tmp_path / "full/model_final.pth")["model"]
    b = load_checkpoint(tmp_path / "split/model_final.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    np.testing.assert_equal(resumed, full)  # NaN (a class absent from val) equals NaN here


@pytest.mark.parametrize(("entries", "message"), [
    ([{"__class_fullname__": "VerticalFlip", "p": 0.5}, {"__class_fullname__": "VerticalFlipp", "p": 0.5}],
     r"data.augment\[1\]: unknown albumentations transform 'VerticalFlipp'"),
    ([{"__class_fullname__": "RandomRotate90", "p": "often"}], r"data.augment\[0\] \(RandomRotate90\): bad argument"),
    ([{"__class_fullname__": "GaussNoise", "var_limit": [10, 50], "p": 1}],
     r"data.augment\[0\] \(GaussNoise\): .*'var_limit' are not valid"),
    ([{"p": 0.5}], r"data.augment\[0\] = .*serialized form"),
])
def test_a_bad_transform_name_or_argument_is_a_config_error_naming_the_entry(entries, message):
    with pytest.raises(ConfigError, match=message):
        build_augment(entries, min_visibility=0.1)


@pytest.mark.parametrize("name", ["aerial_demo.yaml", "documents_demo.yaml"])
def test_the_example_configs_build_and_draw_on_the_demo_images(shapes, tmp_path, name):
    cfg = load_config(REPO / "configs" / name, _overrides(shapes, tmp_path / "run"))
    assert cfg.data.augment
    dataset = _train_set(cfg)
    for index in range(len(dataset)):
        image, target, _ = dataset[index]
        assert image.shape[0] == 3 and target["boxes"].shape[1] == 4
        assert len(target["boxes"]) == len(target["labels"]) == len(target["ignore"])
    if name.startswith("documents"):
        assert not cfg.data.input.flip
        assert not any("Flip" in e["__class_fullname__"] or "Rotate90" in e["__class_fullname__"]
                       for e in cfg.data.augment)
