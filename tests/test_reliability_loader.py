"""The detection loader with worker processes: corrupt images are logged and skipped, errors keep their message,
a dead worker is one clear error (not a hang, not a traceback from the middle of a forward pass)."""

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import detres.data.detection as detection
from detres.config import load_config
from detres.data.detection import build_detection_dataset
from detres.data.loader import LoaderWorkerError, build_detection_loader
from detres.engine.trainer import Trainer
from detres.errors import DataError
from detres.io.checkpoint import latest_checkpoint, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402


@pytest.fixture()
def shapes(tmp_path):
    return make_shapes.generate(tmp_path / "shapes", seed=1, num_train=16, num_val=4, min_size=64, max_size=96)


def _cfg(data: Path, run: Path, *extra: str):
    return load_config(REPO / "configs" / "demo.yaml", [
        f"data.train.ann_file={data}/coco/annotations/instances_train.json", f"data.train.image_dir={data}/coco/train",
        f"data.test.ann_file={data}/coco/annotations/instances_val.json", f"data.test.image_dir={data}/coco/val",
        f"output.dir={run}", "output.tensorboard=false", "data.num_workers=2", "model.backbone.width=8",
        "data.input.train_scales=[80]", "data.input.test_scale=80", "data.input.max_size=128",
        "model.rpn.anchor_sizes=[16,32,64]", "model.rpn.post_nms_topk_train=40", "model.rpn.post_nms_topk_test=20",
        "model.roi_head.batch_size_per_image=16", "solver.ims_per_batch=2", "solver.warmup_iters=2", *extra])


def _loader(cfg, *, train: bool):
    ds = cfg.data.train if train else cfg.data.test
    dataset = build_detection_dataset(ds, input_cfg=cfg.data.input, pixel_mean=cfg.model.backbone.pixel_mean,
                                      pixel_std=cfg.model.backbone.pixel_std, train=train)
    return build_detection_loader(dataset, batch_size=2, train=train, num_workers=2, aspect_ratio_grouping=False,
                                  seed=0, distributed=False)


def test_corrupt_training_images_are_logged_by_the_workers_and_every_batch_arrives(shapes, tmp_path, capfd):
    files = sorted((shapes / "coco" / "train").glob("*.jpg"))
    random_bytes, truncated = files[3], files[10]
    random_bytes.write_bytes(np.random.default_rng(0).bytes(3000))
    whole = truncated.read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    loader = _loader(_cfg(shapes, tmp_path / "run"), train=True)
    handler = logging.StreamHandler(sys.stderr)  # forked workers inherit it; spawned ones fall back to stderr
    logging.getLogger("detres.data").addHandler(handler)
    try:
        batches = list(loader)
    finally:
        logging.getLogger("detres.data").removeHandler(handler)
    assert loader.num_workers == 2 and len(batches) == 8  # 16 images, batches of 2: none lost
    delivered = [meta["file"] for _, _, metas in batches for meta in metas]
    assert len(delivered) == 16 and str(random_bytes) not in delivered and str(truncated) not in delivered
    assert all(image.shape[0] == 3 and torch.isfinite(image).all() for images, _, _ in batches for image in images)
    log = capfd.readouterr().err
    assert "skipping unreadable training image" in log
    assert f"{random_bytes}: not a readable image" in log and f"{truncated}: truncated JPEG" in log


def test_an_error_in_a_worker_keeps_its_own_message_and_a_bug_keeps_its_traceback(shapes, tmp_path, monkeypatch):
    broken = sorted((shapes / "coco" / "val").glob("*.jpg"))[1]
    broken.write_bytes(b"")
    with pytest.raises(DataError) as caught:  # evaluation does not skip images: one clear error
        list(_loader(_cfg(shapes, tmp_path / "run"), train=False))
    assert str(caught.value) == f"{broken}: empty file (0 bytes); remove it or replace it with the real image"

    def buggy(path, **kwargs):
        raise ValueError("a bug, not a user mistake")

    monkeypatch.setattr(detection, "read_image_rgb", buggy)
    with pytest.raises(ValueError, match=r"(?s)Caught ValueError in DataLoader worker.*Traceback.*a bug"):
        list(_loader(_cfg(shapes, tmp_path / "run"), train=True))


@pytest.mark.skipif(torch.multiprocessing.get_start_method() != "fork", reason="the poisoned reader reaches "
                    "workers through fork")
def test_a_dead_worker_stops_training_with_one_clear_error_and_resume_finishes(shapes, tmp_path, monkeypatch):
    real = detection.read_image_rgb
    poisoned = str(sorted((shapes / "coco" / "train").glob("*.jpg"))[5])
    seen = tmp_path / "seen_once"

    def dies_in_a_worker_in_the_second_epoch(path, **kwargs):
        if torch.utils.data.get_worker_info() is not None and str(path) == poisoned:
            if seen.exists():
                os._exit(3)  # what a segfault in a decoder or the out-of-memory killer looks like from outside
            seen.touch()
        return real(path, **kwargs)

    monkeypatch.setattr(detection, "read_image_rgb", dies_in_a_worker_in_the_second_epoch)
    cfg = _cfg(shapes, tmp_path / "run", "solver.max_iter=16", "output.checkpoint_period=2")
    trainer = Trainer(cfg)
    with pytest.raises(LoaderWorkerError, match=r"worker process died \(DataLoader worker \(pid \d+\) exited "
                                                r"unexpectedly with exit code 3\).*data.num_workers=0.*--resume"):
        trainer.train()
    assert 8 <= trainer.iteration < 16  # 8 batches per epoch: it died in the second one
    assert load_checkpoint(latest_checkpoint(tmp_path / "run"))["iteration"] >= 8  # earlier checkpoints intact
    monkeypatch.setattr(detection, "read_image_rgb", real)
    resumed = Trainer(cfg, resume=True)
    resumed.train()
    assert resumed.iteration == 16


@pytest.mark.skipif(torch.multiprocessing.get_start_method() != "fork", reason="the hanging reader reaches "
                    "workers through fork")
def test_a_hung_worker_stops_training_with_one_clear_error_after_the_timeout(shapes, tmp_path, monkeypatch):
    import signal
    import time

    real = detection.read_image_rgb
    poisoned = str(sorted((shapes / "coco" / "train").glob("*.jpg"))[5])
    seen = tmp_path / "seen_once"

    def hangs_in_a_worker_in_the_second_epoch(path, **kwargs):
        if torch.utils.data.get_worker_info() is not None and str(path) == poisoned:
            if seen.exists():
                time.sleep(10**6)  # a stalled network file system: the worker lives but sends nothing
            seen.touch()
        return real(path, **kwargs)

    def never_ends(signum, frame):
        raise AssertionError("training hung on the stuck worker instead of stopping after data.loader_timeout")

    monkeypatch.setattr(detection, "read_image_rgb", hangs_in_a_worker_in_the_second_epoch)
    cfg = _cfg(shapes, tmp_path / "run", "solver.max_iter=16", "output.checkpoint_period=2", "data.loader_timeout=4")
    trainer = Trainer(cfg)
    previous = signal.signal(signal.SIGALRM, never_ends)
    signal.alarm(240)  # a guard so that a broken timeout fails the test instead of hanging the suite
    try:
        with pytest.raises(LoaderWorkerError, match=r"no batch arrived .* data.loader_timeout=4 s: a worker hung"
                                                    r".*data.loader_timeout=600.*data.num_workers=0.*--resume"):
            trainer.train()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert 8 <= trainer.iteration < 16  # 8 batches per epoch: it hung in the second one
    last = latest_checkpoint(tmp_path / "run")
    assert load_checkpoint(last)["iteration"] >= 8  # the last checkpoint is whole and loads
    assert not list((tmp_path / "run").glob(".*.tmp"))  # nothing half-written


def test_a_loader_timeout_that_is_not_positive_is_a_config_error(shapes, tmp_path):
    from detres.errors import ConfigError

    cfg = _cfg(shapes, tmp_path / "run", "data.loader_timeout=0")
    with pytest.raises(ConfigError, match=r"data.loader_timeout=0.0 must be a positive number of seconds"):
        Trainer(cfg)


FORK_AFTER_OPENCV_POOL = """
import sys
import cv2
import numpy as np
from detres.data.detection import build_detection_dataset
from detres.data.loader import build_detection_loader
from detres.config import load_config

cv2.setNumThreads(2)  # this process's OpenCV thread pool exists before the workers fork, as after BN calibration
big = np.zeros((2000, 2000, 3), np.uint8)
for _ in range(5):
    cv2.resize(cv2.GaussianBlur(big, (9, 9), 0), (1500, 1500))
data = sys.argv[1]
cfg = load_config(None, [f"data.train.ann_file={data}/coco/annotations/instances_train.json",
                         f"data.train.image_dir={data}/coco/train", "model.num_classes=6"])
dataset = build_detection_dataset(cfg.data.train, input_cfg=cfg.data.input, pixel_mean=[0.5] * 3,
                                  pixel_std=[0.2] * 3, train=True)
loader = build_detection_loader(dataset, batch_size=2, train=True, num_workers=2, aspect_ratio_grouping=False,
                                seed=0, distributed=False)
print(sum(len(images) for images, _, _ in loader))
"""


def test_workers_do_not_deadlock_when_this_process_used_opencv_threads_first(shapes):
    import subprocess

    try:
        done = subprocess.run([sys.executable, "-c", FORK_AFTER_OPENCV_POOL, str(shapes)], capture_output=True,
                              text=True, timeout=120, cwd=REPO)
    except subprocess.TimeoutExpired:
        pytest.fail("the loader's workers hung after this process had used OpenCV's thread pool")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) == 16  # every training image arrived
