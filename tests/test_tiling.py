"""Tiled inference: the grid covers the image, tiles find the small objects a resized whole image loses, and
objects cut by tile edges come out once.

The detector is a stub that finds colour blobs in its input at any scale, but only blobs of at least MIN_SIDE
input pixels: that is what a real detector does (nothing below a few stride-16 cells), and it makes the test
prove the tiling and merging logic rather than any learning.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detres.config import default_config
from detres.engine.tiled_inference import detect_image
from detres.modeling.tiling import merge_tile_detections, tile_grid

MIN_SIDE = 8  # the stub sees blobs of at least this many input pixels on both sides
TRAIN = 128  # the "training" image side and scale: a tile of 128 px is detected at factor 1
COLOURS = {1: (255, 0, 0), 2: (0, 255, 0)}


class BlobDetector:
    """model([image [3, H, W] normalized]) -> [{"boxes", "scores", "labels"}]: one box per connected blob of a
    pure colour (red: label 1, green: label 2), clipped to the input as a real detector's boxes are."""

    def __init__(self) -> None:
        self.inputs: list[tuple[int, int]] = []

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            self.inputs.append(tuple(image.shape[1:]))
            on = (image > 0).numpy()  # normalized: black background < 0, a saturated channel > 0
            boxes, labels = [], []
            for label, mask in ((1, on[0] & ~on[1]), (2, on[1] & ~on[0])):
                count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
                for x, y, w, h, _ in stats[1:count]:
                    if w >= MIN_SIDE and h >= MIN_SIDE:
                        boxes.append([x, y, x + w, y + h])
                        labels.append(label)
            out.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        "scores": torch.full((len(boxes),), 0.9), "labels": torch.tensor(labels, dtype=torch.int64)})
        return out


def _cfg(tile: int, *, whole: bool = False):
    cfg = default_config()
    cfg.data.input.train_scales = [TRAIN]
    cfg.data.input.test_scale = TRAIN
    cfg.data.input.max_size = 100_000
    cfg.test.tile_size = tile
    cfg.test.tile_overlap = 0.25
    cfg.test.tile_whole_image = whole
    cfg.test.nms_thresh = 0.5
    return cfg


def _scene(side: int, boxes: list[list[int]], labels: list[int]) -> np.ndarray:
    rgb = np.zeros((side, side, 3), np.uint8)
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        rgb[y1:y2, x1:x2] = COLOURS[label]
    return rgb


def _many_small(side: int, count: int, rng: np.random.Generator, avoid: tuple = ()
                ) -> tuple[list[list[int]], list[int]]:
    """`count` non-touching squares of 10-20 px (>= MIN_SIDE in a tile, < MIN_SIDE when the image shrinks 6x),
    apart from the boxes in `avoid`."""
    boxes: list[list[int]] = list(avoid)
    while len(boxes) < count + len(avoid):
        s = int(rng.integers(10, 21))
        x, y = (int(v) for v in rng.integers(0, side - s, size=2))
        cand = [x, y, x + s, y + s]
        if all(cand[0] > b[2] + 2 or cand[2] < b[0] - 2 or cand[1] > b[3] + 2 or cand[3] < b[1] - 2 for b in boxes):
            boxes.append(cand)
    return boxes[len(avoid):], [int(v) for v in rng.integers(1, 3, size=count)]


def _recall(det: dict[str, torch.Tensor], gt: torch.Tensor, gt_labels: torch.Tensor, thr: float = 0.5) -> float:
    if det["boxes"].shape[0] == 0:
        return 0.0
    iou = box_iou(gt, det["boxes"]) * (gt_labels[:, None] == det["labels"][None, :])
    return float((iou.max(dim=1).values >= thr).float().mean())


@pytest.mark.parametrize("hw,size,overlap", [((768, 768), 128, 0.25), ((500, 1333), 256, 0.3),
                                             ((100, 90), 128, 0.25), ((129, 300), 128, 0.0)])
def test_grid_covers_the_image_exactly_with_the_overlap(hw, size, overlap):
    height, width = hw
    tiles = tile_grid(height, width, size=size, overlap=overlap)
    covered = np.zeros(hw, np.int32)
    for x1, y1, x2, y2 in tiles.tolist():
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert x2 - x1 == min(size, width) and y2 - y1 == min(size, height)
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1  # every pixel in a tile, no tile outside the image
    for axis_starts, length in ((sorted({t[0] for t in tiles.tolist()}), width),
                                (sorted({t[1] for t in tiles.tolist()}), height)):
        shared = [a + size - b for a, b in zip(axis_starts, axis_starts[1:])]
        assert all(s >= overlap * size - 1e-6 for s in shared)
        if shared:  # any interval no longer than the shared strip lies whole in one tile
            strip = min(shared)
            for a in range(0, length - strip + 1):
                assert any(s <= a and a + strip <= s + size for s in axis_starts)


def test_tiles_recall_small_objects_that_the_resized_whole_image_loses():
    side = 6 * TRAIN
    boxes, labels = _many_small(side, 60, np.random.default_rng(0))
    rgb = _scene(side, boxes, labels)
    gt, gt_labels = torch.tensor(boxes, dtype=torch.float32), torch.tensor(labels)
    model = BlobDetector()
    whole = detect_image(model, rgb, _cfg(0), torch.device("cpu"))
    assert model.inputs == [(TRAIN, TRAIN)]  # the whole image shrunk 6x to the test scale
    model.inputs.clear()
    tiled = detect_image(model, rgb, _cfg(TRAIN), torch.device("cpu"))
    assert set(model.inputs) == {(TRAIN, TRAIN)}  # tiles at the training scale: factor 1, no resize
    recall_whole, recall_tiled = _recall(whole, gt, gt_labels), _recall(tiled, gt, gt_labels)
    assert recall_whole <= 0.05
    assert recall_tiled == 1.0
    assert tiled["boxes"].shape[0] == len(boxes)  # no duplicates from overlapping tiles


def test_object_on_a_tile_border_is_detected_once():
    side = 6 * TRAIN
    tiles = tile_grid(side, side, size=TRAIN, overlap=0.25)
    starts = sorted({t[0] for t in tiles.tolist()})
    edge = starts[2]  # the left edge of the third tile column lies inside the second column's tile
    boxes = [[edge - 21, 40, edge + 9, 52],  # straddling an interior edge: whole in one tile, 9 px in the next
             [starts[3] + TRAIN - 5, starts[1] + TRAIN - 5, starts[3] + TRAIN + 7, starts[1] + TRAIN + 7],  # corner
             [200, 300, 420, 380]]  # larger than a tile: every tile sees only part of it
    labels = [1, 2, 1]
    rgb = _scene(side, boxes, labels)
    det = detect_image(BlobDetector(), rgb, _cfg(TRAIN), torch.device("cpu"))
    gt = torch.tensor(boxes, dtype=torch.float32)
    iou = box_iou(gt, det["boxes"])
    assert det["boxes"].shape[0] == 3
    assert (iou.max(dim=1).values > 0.99).all()  # each object once, whole (the big one joined from its parts)
    assert ((iou > 0.0).sum(dim=1) == 1).all()  # and no partial box beside it
    assert det["labels"][iou.argmax(dim=1)].tolist() == labels


def test_whole_image_pass_adds_large_objects_without_duplicates():
    side = 6 * TRAIN
    big = [[200, 400, 500, 700]]  # 50 px in the 6x-shrunk whole image: the whole-image pass sees it, tiles parts
    small, small_labels = _many_small(side, 20, np.random.default_rng(1), avoid=tuple(big))
    rgb = _scene(side, small + big, small_labels + [2])
    det = detect_image(BlobDetector(), rgb, _cfg(TRAIN, whole=True), torch.device("cpu"))
    gt = torch.tensor(small + big, dtype=torch.float32)
    assert _recall(det, gt, torch.tensor(small_labels + [2])) == 1.0
    iou_big = box_iou(gt[-1:], det["boxes"])[0]
    assert int((iou_big > 0.5).sum()) == 1  # the joined parts and the whole-image box: one after NMS


def test_merge_by_hand():
    """Two tiles [0, 100] and [60, 160] in x (one row, image 160x50): a full box seen by both, a partial view of
    an object seen whole by the left tile, a lone part, and the two halves of an object that no tile holds."""
    tiles = torch.tensor([[0, 0, 100, 50], [60, 0, 160, 50]])
    left = {"boxes": torch.tensor([[62.0, 5, 80, 20], [10, 30, 20, 40], [40, 22, 100, 45], [45, 5, 70, 15]]),
            "scores": torch.tensor([0.9, 0.8, 0.7, 0.4]), "labels": torch.tensor([1, 1, 2, 4])}
    right = {"boxes": torch.tensor([[62.0, 5, 80, 21], [60, 22, 150, 45], [60, 30, 64, 40], [60, 5, 70, 15]]),
             "scores": torch.tensor([0.6, 0.95, 0.5, 0.9]), "labels": torch.tensor([1, 2, 3, 4])}
    out = merge_tile_detections(tiles, [left, right], image_hw=(50, 160), nms_thresh=0.5, edge_margin=1.0)
    got = {(tuple(b.tolist()), round(float(s), 2), int(l)) for b, s, l in zip(out["boxes"], out["scores"],
                                                                               out["labels"])}
    assert got == {((62.0, 5.0, 80.0, 20.0), 0.9, 1),   # the duplicate (score 0.6) removed by NMS
                   ((10.0, 30.0, 20.0, 40.0), 0.8, 1),
                   ((40.0, 22.0, 150.0, 45.0), 0.95, 2),  # two truncated halves that agree in [60, 100]: union
                   ((60.0, 30.0, 64.0, 40.0), 0.5, 3),    # truncated, no full box of its class, no partner: kept
                   ((45.0, 5.0, 70.0, 15.0), 0.4, 4)}     # its partial view (IoU 0.4, score 0.9) dropped


def test_dataset_path_reads_originals_and_returns_original_pixels(tmp_path):
    """tools/test_det.py's path: each record's original image is read and detected by tiles, in its pixels."""
    from types import SimpleNamespace

    from detres.data.records import DetRecord
    from detres.engine.tiled_inference import run_tiled_inference

    boxes = [[300, 200, 316, 214], [10, 500, 24, 520]]
    rgb = _scene(6 * TRAIN, boxes, [1, 2])
    cv2.imwrite(str(tmp_path / "big.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    rec = DetRecord(str(tmp_path / "big.png"), 7, 6 * TRAIN, 6 * TRAIN)
    out = run_tiled_inference(BlobDetector(), SimpleNamespace(records=[rec]), _cfg(TRAIN), torch.device("cpu"),
                              show_progress=False)
    assert list(out) == [7]
    order = np.argsort(out[7]["boxes"][:, 0])[::-1]
    np.testing.assert_allclose(out[7]["boxes"][order], np.array(boxes, np.float32))
    assert out[7]["labels"][order].tolist() == [1, 2] and out[7]["boxes"].dtype == np.float32


@pytest.mark.parametrize("size,overlap,key", [(0, 0.25, "test.tile_size"), (128, 1.0, "test.tile_overlap"),
                                              (128, -0.1, "test.tile_overlap")])
def test_bad_tile_settings_name_the_key(size, overlap, key):
    from detres.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        tile_grid(100, 100, size=size, overlap=overlap)


def test_whole_image_boxes_no_larger_than_a_tile_are_left_to_the_tiles():
    """The whole-image pass (the first model call) adds a small box (3 px there, 18 px in the image: smaller than
    the 128-px tile, so the tiles own it) and a large one (60 px there, 360 px): only the large one stays."""

    class WithWholeExtras(BlobDetector):
        def __call__(self, images):
            out = super().__call__(images)
            if len(self.inputs) == 1:
                out[0] = {"boxes": torch.tensor([[50.0, 50, 53, 53], [0, 0, 60, 60]]),
                          "scores": torch.tensor([0.8, 0.7]), "labels": torch.tensor([1, 2])}
            return out

    det = detect_image(WithWholeExtras(), np.zeros((6 * TRAIN, 6 * TRAIN, 3), np.uint8), _cfg(TRAIN, whole=True),
                       torch.device("cpu"))
    torch.testing.assert_close(det["boxes"], torch.tensor([[0.0, 0, 360, 360]]))


def test_tiles_stream_in_batches_with_the_same_detections(monkeypatch):
    """Tiles are cut and resized a batch (test.ims_per_batch) at a time: when the model runs, at most one batch of
    tile inputs is alive (counted by weak references to each tile tensor). The detections equal those of one batch
    holding every tile, which is what detect_image computed before it streamed (all 64 tiles in memory)."""
    import weakref

    import detres.engine.tiled_inference as tiled

    alive = {"now": 0}
    original = tiled._resized_input

    def counted(rgb, factor, cfg):
        out = original(rgb, factor, cfg)
        alive["now"] += 1
        weakref.finalize(out[0], lambda: alive.__setitem__("now", alive["now"] - 1))
        return out

    class Watching(BlobDetector):
        def __call__(self, images):
            self.peak = max(getattr(self, "peak", 0), alive["now"])
            return super().__call__(images)

    monkeypatch.setattr(tiled, "_resized_input", counted)
    side = 6 * TRAIN
    boxes, labels = _many_small(side, 40, np.random.default_rng(2), avoid=([200, 300, 420, 380],))
    rgb = _scene(side, boxes + [[200, 300, 420, 380]], labels + [1])
    tiles = len(tile_grid(side, side, size=TRAIN, overlap=0.25))
    results = {}
    for batch in (1, 4, tiles):
        cfg = _cfg(TRAIN)
        cfg.test.ims_per_batch = batch
        model = Watching()
        results[batch] = detect_image(model, rgb, cfg, torch.device("cpu"))
        assert model.peak == min(batch, tiles), (batch, model.peak)
        assert alive["now"] == 0
    assert tiles == 64 and results[tiles]["boxes"].shape[0] == len(boxes) + 1
    for batch in (1, 4):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(results[batch][key], results[tiles][key])
