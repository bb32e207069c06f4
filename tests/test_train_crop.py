"""data.train_crop: a window's boxes equal a hand crop (and albumentations' Crop) with the visibility rule, the epoch
covers each large image in proportion to its area, windows are read from TIFF tiles without decoding the rest, resume
stays bit for bit, and the recommendation of tools/dataset_stats.py follows its rule."""

import json
import sys
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import tifffile
import torch

from detres.config import default_config, load_config
from detres.data.crops import TrainCrop, crop_boxes, crop_plan, draw_window, recommend_train_crop, whole_probability
from detres.data.detection import build_detection_dataset
from detres.data.image_io import read_image_rgb
from detres.data.loader import GroupedBatchSampler
from detres.data.records import DetRecord
from detres.data.transforms import normalize_to_tensor
from detres.data.window_read import WindowReader
from detres.errors import ConfigError
from detres.io.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_large_shapes  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _crop(size=200, background=0.2, visibility=0.3) -> TrainCrop:
    return TrainCrop(size=size, background_prob=background, min_visibility=visibility, cache_mb=64)


def test_window_boxes_equal_a_hand_crop():
    boxes = np.array([[10, 10, 50, 50],  # left of the window: gone
                      [180, 20, 220, 60],  # 20 of its 40 px width inside: half visible
                      [120, 30, 150, 70],  # whole inside
                      [150, 90, 170, 130],  # 10 of 40 px height inside: a quarter visible
                      [190, 100, 260, 140]], np.float32)  # below the window: no area inside
    labels, ignore = np.array([1, 2, 3, 1, 2]), np.array([False, False, True, False, False])
    window = (100, 0, 100, 100)  # x0, y0, w, h
    out, out_labels, out_ignore = crop_boxes(boxes, labels, ignore, window, min_visibility=0.3)
    np.testing.assert_array_equal(out, [[80, 20, 100, 60], [20, 30, 50, 70]])
    np.testing.assert_array_equal(out_labels, [2, 3])
    np.testing.assert_array_equal(out_ignore, [False, True])
    # the quarter-visible box stays at a threshold of 0.25, the half-visible one goes at 0.6
    assert crop_boxes(boxes, labels, ignore, window, min_visibility=0.25)[0].tolist() == \
        [[80, 20, 100, 60], [20, 30, 50, 70], [50, 90, 70, 100]]
    assert crop_boxes(boxes, labels, ignore, window, min_visibility=0.6)[1].tolist() == [3]


def test_window_boxes_equal_albumentations_crop_on_random_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 380, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 120, (200, 2))], 1).clip(0, 400).astype(np.float32)
    labels = np.arange(200)
    image = np.zeros((400, 400, 3), np.uint8)
    for visibility in (0.0, 0.3, 0.7):
        x0, y0, w, h = 130, 70, 150, 180
        ref = A.Compose([A.Crop(x_min=x0, y_min=y0, x_max=x0 + w, y_max=y0 + h)],
                        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                                 min_visibility=visibility))(image=image, bboxes=boxes, labels=labels)
        ours, our_labels, _ = crop_boxes(boxes, labels, np.zeros(200, bool), (x0, y0, w, h), visibility)
        keep = np.isin(our_labels, ref["labels"])  # albumentations also keeps zero-area slivers at visibility 0
        assert keep.sum() >= len(ours) - 2 and set(ref["labels"]) >= set(our_labels[keep])
        np.testing.assert_allclose(ours[keep], np.asarray(ref["bboxes"])[np.isin(ref["labels"], our_labels)],
                                   atol=1e-3)


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """Two 320 px scenes of the demo's shapes (COCO json)."""
    out = tmp_path_factory.mktemp("large")
    make_large_shapes.generate(out, grid=2, num=2, seed=3)
    return out


def _dataset(large, crop, *, scale=None, seed=0):
    cfg = default_config()
    cfg.data.train.format, cfg.data.train.ann_file = "coco", str(large / "annotations.json")
    cfg.data.train.image_dir = str(large / "images")
    cfg.data.input.train_scales, cfg.data.input.max_size, cfg.data.input.flip = [scale or crop.size], 4000, False
    return build_detection_dataset(cfg.data.train, input_cfg=cfg.data.input, pixel_mean=MEAN, pixel_std=STD,
                                   train=True, seed=seed, crop=crop, augment_min_visibility=crop.min_visibility)


def test_dataset_item_is_the_hand_crop_of_the_file(large):
    dataset = _dataset(large, _crop(size=128))
    assert len(dataset) == 2 * 3 * 3  # two 320 px images, ceil(320 / 128) = 3 windows each way
    for item in range(len(dataset)):
        image, target, meta = dataset[item]
        rec = dataset.records[dataset.slots[item].image]
        x0, y0, w, h = meta["window"]
        assert (w, h) == (128, 128) and 0 <= x0 <= 320 - 128 and 0 <= y0 <= 320 - 128
        rgb = read_image_rgb(rec.image_path)[y0:y0 + h, x0:x0 + w]
        assert torch.equal(image, normalize_to_tensor(rgb, MEAN, STD))
        hand, labels, _ = crop_boxes(rec.boxes, rec.labels, rec.ignore, (x0, y0, w, h), 0.3)
        np.testing.assert_array_equal(target["boxes"].numpy(), hand)
        np.testing.assert_array_equal(target["labels"].numpy(), labels)
    # the same item in another epoch is another window; in the same epoch, the same one
    dataset.set_epoch(1)
    windows = [dataset[i][2]["window"] for i in range(len(dataset))]
    dataset.set_epoch(0)
    assert windows != [dataset[i][2]["window"] for i in range(len(dataset))]


def test_the_paper_resize_applies_to_the_window(large):
    dataset = _dataset(large, _crop(size=128), scale=64)
    image, target, meta = dataset[4]
    assert image.shape[-2:] == (64, 64) and meta["scale"] == (0.5, 0.5)
    hand, _, _ = crop_boxes(dataset.records[0].boxes, dataset.records[0].labels, dataset.records[0].ignore,
                            meta["window"], 0.3)
    np.testing.assert_allclose(target["boxes"].numpy(), hand * 0.5, atol=1e-4)


def test_background_windows_are_kept_with_their_probability():
    record_boxes = np.array([[900, 900, 950, 950]], np.float32)  # one object in the corner of a 1000 px image
    slots = crop_plan([(1000, 1000)], 100)
    empty = {}
    for prob in (0.0, 0.5, 1.0):
        windows = [draw_window(s, 1000, 1000, record_boxes, np.zeros(1, bool), _crop(100, prob), 0, 0, i)
                   for i, s in enumerate(slots)]
        empty[prob] = sum(len(crop_boxes(record_boxes, np.ones(1), np.zeros(1, bool), w, 0.3)[0]) == 0
                          for w in windows)
    assert empty[0.0] == 0  # every window moved onto the object
    assert empty[1.0] == 99  # 100 slots, the object lies in the last one's area (and its neighbours' jitter)
    assert 30 < empty[0.5] < 70


def test_epoch_covers_each_image_in_proportion_to_its_area():
    sizes = [(1000, 1000), (500, 500), (1100, 400), (120, 90)]
    crop = _crop(size=250, background=1.0)
    slots = crop_plan(sizes, crop.size)
    per_image = np.bincount([s.image for s in slots], minlength=4)
    assert per_image.tolist() == [16, 4, 5 * 2, 1]  # ceil(W/250) x ceil(H/250): about area / 250^2, small ones once
    assert per_image[0] / per_image[1] == (1000 * 1000) / (500 * 500)
    covered = [np.zeros((h, w), bool) for w, h in sizes]
    no_boxes = np.zeros((0, 4), np.float32)
    for item, slot in enumerate(slots):
        w, h = sizes[slot.image]
        x0, y0, ww, hh = draw_window(slot, w, h, no_boxes, np.zeros(0, bool), crop, seed=0, epoch=0, item=item)
        assert x0 >= 0 and x0 + ww <= w and y0 >= 0 and y0 + hh <= h and (ww, hh) == (min(250, w), min(250, h))
        covered[slot.image][y0:y0 + hh, x0:x0 + ww] = True
    fractions = [c.mean() for c in covered]
    assert min(fractions) > 0.95, fractions  # one epoch's windows spread over the whole of each image
    # the batch sampler over the items: each window slot once per epoch
    sampler = GroupedBatchSampler(np.ones(len(slots)), batch_size=3, shuffle=True, group=False, seed=0,
                                  drop_last=False)
    assert sorted(i for batch in sampler for i in batch) == list(range(len(slots)))


def test_tiff_windows_come_from_their_tiles_and_equal_the_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (700, 900, 3), np.uint8)
    gray16 = rng.integers(0, 65535, (500, 600), np.uint16)
    tifffile.imwrite(tmp_path / "tiled.tif", rgb, tile=(128, 128), compression="zlib", photometric="rgb")
    tifffile.imwrite(tmp_path / "strips.tiff", rgb, rowsperstrip=37, compression="zlib", photometric="rgb")
    tifffile.imwrite(tmp_path / "plain.tif", rgb, photometric="rgb")  # uncompressed: memory-mapped
    tifffile.imwrite(tmp_path / "gray16.tif", gray16, tile=(64, 64), compression="zlib")
    cv2.imwrite(str(tmp_path / "scene.png"), rgb[:, :, ::-1])
    reader = WindowReader(cache_mb=64, max_pixels=10**8)
    for name in ("tiled.tif", "strips.tiff", "plain.tif", "gray16.tif", "scene.png"):
        full = read_image_rgb(tmp_path / name)
        height, width = full.shape[:2]
        for x0, y0, w, h in [(0, 0, 200, 200), (width - 200, height - 150, 200, 150), (127, 129, 260, 131)]:
            before = reader.tiff_reads
            got = reader.read(tmp_path / name, (x0, y0, w, h), (width, height))
            np.testing.assert_array_equal(got, full[y0:y0 + h, x0:x0 + w], err_msg=name)
            assert reader.tiff_reads - before == (0 if name.endswith(".png") else 1)
    assert list(reader.cache) == [str(tmp_path / "scene.png")]  # only the PNG needed a whole decode


def test_the_decode_cache_keeps_to_its_budget(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((512, 512, 3), i, np.uint8))  # 0.75 MB decoded each
    reader = WindowReader(cache_mb=2, max_pixels=10**8)
    for i in (0, 1, 2, 1):
        assert reader.read(tmp_path / f"{i}.png", (0, 0, 8, 8), (512, 512))[0, 0, 0] == i
    assert list(reader.cache) == [str(tmp_path / "2.png"), str(tmp_path / "1.png")]  # 0 evicted, 1 most recent
    assert reader.cached_bytes == 2 * 512 * 512 * 3 <= 2 * 2**20
    assert WindowReader(cache_mb=0, max_pixels=10**8).read(tmp_path / "0.png", (0, 0, 8, 8), (512, 512)).shape == \
        (8, 8, 3)


def test_bad_settings_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="data.train_crop=8"):
        TrainCrop.from_config(load_config(None, ["data.train_crop=8"]).data)
    with pytest.raises(ConfigError, match="data.train_crop_background=1.5"):
        TrainCrop.from_config(load_config(None, ["data.train_crop=256", "data.train_crop_background=1.5"]).data)
    assert TrainCrop.from_config(default_config().data) is None


def test_recommendation_follows_its_rule():
    boxes = np.array([[0, 0, 100, 40]] * 99 + [[0, 0, 20, 20]], np.float32)
    records = [DetRecord("a.jpg", 1, 3000, 2000, boxes, np.ones(100, np.int64), np.zeros(100, bool)),
               DetRecord("b.jpg", 2, 300, 200, boxes[:1], np.ones(1, np.int64), np.zeros(1, bool))]
    advice = recommend_train_crop(records, train_scale=200)
    # p99 longer side 100 px: 100 / (1 - sqrt(0.5)) = 341.4 -> 352, the next multiple of 32
    assert advice["train_crop"] == 352 and advice["p99_longer_side_px"] == 100.0
    assert advice["p99_whole_probability"] == round(whole_probability(100, 352), 3) >= 0.5
    assert advice["windows_per_epoch"] == 9 * 6 + 1 and advice["images_larger_than_crop"] == 1
    assert recommend_train_crop(records, train_scale=600)["train_crop"] == 608  # not below the training scale
    assert recommend_train_crop(records[1:], train_scale=200)["train_crop"] == 0  # no image larger: crops off


def _tiny_overrides(large: Path, run: Path, *extra: str) -> list[str]:
    ann = str(large / "annotations.json")
    return [f"data.train.ann_file={ann}", f"data.train.image_dir={large}/images", f"data.test.ann_file={ann}",
            f"data.test.image_dir={large}/images", f"output.dir={run}", "output.tensorboard=false",
            "data.num_workers=0", "model.backbone.width=8", "model.num_classes=0", "data.train_crop=128",
            "data.input.train_scales=[96]", "data.input.test_scale=96", "data.input.max_size=128",
            "model.rpn.anchor_sizes=[16,32,64]", "model.rpn.post_nms_topk_train=40", "model.rpn.post_nms_topk_test=20",
            "model.roi_head.batch_size_per_image=16", "solver.ims_per_batch=2", "solver.warmup_iters=2",
            "solver.steps=[5]", "test.eval_metrics=[voc07]", "test.tile_size=128", "model.backbone.norm=gn", *extra]


def test_resume_with_crops_is_bit_for_bit(large, tmp_path):
    from detres.engine.train import train_detector

    def cfg(run, iters):
        overrides = _tiny_overrides(large, tmp_path / run, f"solver.max_iter={iters}")
        return load_config(REPO / "configs" / "demo.yaml", overrides)

    full = train_detector(cfg("full", 12))  # 18 windows per epoch at 2 per batch: 9 iterations, then epoch 1
    train_detector(cfg("split", 5))
    resumed = train_detector(cfg("split", 12), resume=True)
    a = load_checkpoint(tmp_path / "full/model_final.pth")["model"]
    b = load_checkpoint(tmp_path / "split/model_final.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert resumed == full
    stored = json.loads(json.dumps(load_checkpoint(tmp_path / "full/model_final.pth")["config"]))
    assert stored["data"]["train_crop"] == 128 and stored["model"]["backbone"]["norm"] == "gn"


def test_dataset_stats_sizes_are_those_of_the_windows():
    from detres.data.stats import scaled_boxes

    rec = DetRecord("a.jpg", 1, 1000, 600, np.array([[700, 450, 740, 470]], np.float32), np.ones(1, np.int64),
                    np.zeros(1, bool))
    whole = scaled_boxes([rec], scales=[300], max_size=2000)  # the whole image: shorter side 600 -> 300
    np.testing.assert_allclose(whole.boxes, [[350, 225, 370, 235]])
    # 200 px windows resized to 300 (x1.5); the box is given in the frame of the window holding its centre (600, 400)
    windows = scaled_boxes([rec], scales=[300], max_size=2000, crop=200)
    np.testing.assert_allclose(windows.boxes, [[150, 75, 210, 105]])
    assert windows.image_hw.tolist() == [[300, 300]]


def test_stepwise_training_refuses_crops(large):
    from detres.data.proposals import ProposalDataset

    dataset = _dataset(large, _crop(size=128))
    proposals = {str(r.image_id): torch.zeros(0, 4) for r in dataset.records}
    with pytest.raises(ConfigError, match="data.train_crop=0 or solver.mode=joint"):
        ProposalDataset(dataset=dataset, proposals=proposals)
