"""Multi-scale training: scales from the test pyramid, drawn per image or once per mini-batch, reproducibly."""

import sys

import numpy as np
import pytest
from test_engine_det import REPO, tiny_overrides

from detres.config import load_config
from detres.data.loader import GroupedBatchSampler, build_detection_loader
from detres.data.train_scales import batch_scale, train_scale_choices
from detres.data.transforms import resize_factor
from detres.engine.trainer import build_datasets
from detres.errors import ConfigError

sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402

PYRAMID = "test.pyramid_scales=[48,64,80,96,112]"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes.generate(tmp_path_factory.mktemp("shapes"), seed=3, num_train=12, num_val=2,
                                min_size=64, max_size=96)


def _cfg(data, tmp_path, *extra):
    return load_config(REPO / "configs" / "demo.yaml", tiny_overrides(data, tmp_path / "run", PYRAMID, *extra))


def test_per_image_scale_from_the_test_pyramid_is_reproducible(shapes, tmp_path):
    cfg = _cfg(shapes, tmp_path, "data.input.train_scale_source=test_pyramid")
    train = build_datasets(cfg)[0]
    again = build_datasets(cfg)[0]
    ratio = cfg.data.input.max_size / cfg.data.input.test_scale  # 128 / 80
    drawn = set()
    for epoch in (0, 1):
        train.set_epoch(epoch)
        again.set_epoch(epoch)
        for i in range(len(train)):
            image, target, meta = train[i]
            image2, target2, _ = again[i]
            assert image.shape == image2.shape and np.array_equal(target["boxes"], target2["boxes"])
            rec = train.records[i]
            # the size is that of one pyramid level s, longer side capped at s * max_size / test_scale
            sizes = {s: (round(rec.height * resize_factor(rec.height, rec.width, s, round(s * ratio))),
                         round(rec.width * resize_factor(rec.height, rec.width, s, round(s * ratio))))
                     for s in cfg.test.pyramid_scales}
            level = [s for s, hw in sizes.items() if hw == tuple(image.shape[1:])]
            assert level, f"image {i} of shape {tuple(image.shape)} is at no pyramid level {sizes}"
            drawn.add(level[0])
    assert len(drawn) >= 3  # random across images and epochs, not one fixed scale


def test_per_iteration_scale_one_per_batch_same_in_every_process_and_after_resume(shapes, tmp_path):
    cfg = _cfg(shapes, tmp_path, "data.input.train_scale_source=test_pyramid",
               "data.input.train_scale_sampling=iteration")
    train = build_datasets(cfg)[0]
    assert train.batch_scales == [48, 64, 80, 96, 112]
    loader = build_detection_loader(train, batch_size=2, train=True, num_workers=0, aspect_ratio_grouping=False,
                                    seed=0, distributed=False, batch_scales=train.batch_scales)
    shorts = []
    for images, _, _ in loader:
        sides = {min(im.shape[1:]) for im in images}
        shorts.append(sides)
    assert all(len(s) == 1 for s in shorts), f"one scale per batch: {shorts}"
    ratios = np.ones(12)
    ranks = [GroupedBatchSampler(ratios, batch_size=2, shuffle=True, group=False, seed=5, rank=r, world_size=2,
                                 batch_scales=[48, 96]) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(3)
    per_rank = [list(s) for s in ranks]
    for j, (b0, b1) in enumerate(zip(*per_rank)):  # global iteration j: both processes at the same scale
        expected = batch_scale([48, 96], seed=5, epoch=3, iteration=j)
        assert {s for _, s in b0} == {s for _, s in b1} == {expected}
    resumed = GroupedBatchSampler(ratios, batch_size=2, shuffle=True, group=False, seed=5, rank=0, world_size=2,
                                  batch_scales=[48, 96])
    resumed.set_epoch(3, skip=2)
    assert list(resumed) == per_rank[0][2:]


def test_default_path_is_unchanged_and_bad_values_are_refused(shapes, tmp_path):
    cfg = _cfg(shapes, tmp_path)
    assert train_scale_choices(cfg.data.input, cfg.test.pyramid_scales) == ([80], 0.0, False)
    with pytest.raises(ConfigError, match="train_scale_source='pyramid'"):
        build_datasets(_cfg(shapes, tmp_path, "data.input.train_scale_source=pyramid"))
    with pytest.raises(ConfigError, match="train_scale_sampling='batch'"):
        build_datasets(_cfg(shapes, tmp_path, "data.input.train_scale_sampling=batch"))
