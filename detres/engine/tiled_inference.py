"""Tiled inference: a large image cut into overlapping tiles, each detected at the training scale, then merged.

A model trained on images resized to a shorter side of s sees its objects at that magnification; shrinking a
4000-pixel image to s loses every small object. Here each tile of `test.tile_size` original pixels is resized as
a training image of that size is (shorter side to the largest of `data.input.train_scales`, capped by
`max_size`), never more, and its detections are merged by `detres.modeling.tiling.merge_tile_detections`.

Tiles are cut, resized and detected a batch (`test.ims_per_batch`) at a time, and only their detections are kept:
the inputs of every tile at once would take 1.25 GB for a 10k x 10k image (289 tiles of 800 px at overlap 0.25, each
resized to [3, 600, 600] float32); a batch takes one or a few of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice

import cv2
import numpy as np
import torch
from torch import Tensor

from detres.cli.progress import progress as progress_bar
from detres.data.image_io import read_image_rgb
from detres.data.transforms import normalize_to_tensor, resize_factor
from detres.modeling.fast_inference import autocast_dtype
from detres.modeling.tiling import merge_tile_detections, tile_grid

Model = Callable[[list[Tensor]], list[dict[str, Tensor]]]
EDGE_MARGIN_FRAC = 0.02  # a box within 2% of the tile side from an interior tile edge counts as cut by it


def _resized_input(rgb: np.ndarray, factor: float, cfg) -> tuple[Tensor, float, float]:
    """(normalized [3, H', W'] of `rgb` resized by `factor`, sx, sy): the exact per-axis factors after rounding."""
    height, width = rgb.shape[:2]
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    tensor = normalize_to_tensor(resized, cfg.model.backbone.pixel_mean, cfg.model.backbone.pixel_std)
    return tensor, new_w / width, new_h / height


def _run(model: Model, inputs: list[Tensor], cfg, device: torch.device) -> list[dict[str, Tensor]]:
    dtype = autocast_dtype(cfg.test.precision, device)
    outputs: list[dict[str, Tensor]] = []
    batch = max(1, cfg.test.ims_per_batch)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for start in range(0, len(inputs), batch):
            outputs.extend(model([t.to(device) for t in inputs[start:start + batch]]))
    return [{k: v.float().cpu() if k != "labels" else v.cpu() for k, v in det.items()} for det in outputs]


def _tile_inputs(rgb: np.ndarray, tiles: Tensor, factor: float, cfg
                 ) -> Iterator[tuple[Tensor, tuple[float, float, float, float]]]:
    """(model input of each tile, its (sx, sy, x1, y1) back to image pixels), made one at a time as they are asked
    for."""
    for x1, y1, x2, y2 in tiles.tolist():
        tensor, sx, sy = _resized_input(rgb[y1:y2, x1:x2], factor, cfg)
        yield tensor, (sx, sy, x1, y1)


def _run_streamed(model: Model, items: Iterable[tuple[Tensor, tuple[float, float, float, float]]], cfg,
                  device: torch.device) -> list[dict[str, Tensor]]:
    """The detections of every tile in image pixels, with at most test.ims_per_batch tile inputs alive at once
    (a batch is freed before the next one is cut); the batches are those `_run` would make of the whole list."""
    batch = max(1, cfg.test.ims_per_batch)
    items = iter(items)
    per_tile: list[dict[str, Tensor]] = []
    while chunk := list(islice(items, batch)):
        factors = [f for _, f in chunk]
        inputs = [tensor for tensor, _ in chunk]
        del chunk
        detections = _run(model, inputs, cfg, device)
        del inputs
        per_tile.extend(_to_image(det, *f) for det, f in zip(detections, factors))
    return per_tile


def _to_image(det: dict[str, Tensor], sx: float, sy: float, dx: float, dy: float) -> dict[str, Tensor]:
    boxes = det["boxes"].reshape(-1, 4) / torch.tensor([sx, sy, sx, sy]) + torch.tensor([dx, dy, dx, dy])
    return {"boxes": boxes, "scores": det["scores"], "labels": det["labels"]}


def detect_image(model: Model, rgb: np.ndarray, cfg, device: torch.device) -> dict[str, Tensor]:
    """All detections of an RGB uint8 image [H, W, 3]: boxes [K, 4] XYXY in its pixels, scores [K], labels [K].

    test.tile_size = 0: the whole image at test_scale (as tools/infer.py always did). Otherwise tiles of that
    side with test.tile_overlap, plus the whole image when test.tile_whole_image, merged class-wise.
    """
    height, width = rgb.shape[:2]
    inp = cfg.data.input
    whole = None
    if not cfg.test.tile_size or cfg.test.tile_whole_image:
        tensor, sx, sy = _resized_input(rgb, resize_factor(height, width, inp.test_scale, inp.max_size), cfg)
        whole = _to_image(_run(model, [tensor], cfg, device)[0], sx, sy, 0.0, 0.0)
        if not cfg.test.tile_size:
            return whole
    size = int(cfg.test.tile_size)
    tiles = tile_grid(height, width, size=size, overlap=cfg.test.tile_overlap)
    factor = resize_factor(size, size, max(inp.train_scales), inp.max_size)
    per_tile = _run_streamed(model, _tile_inputs(rgb, tiles, factor, cfg), cfg, device)
    if whole is not None:
        # the whole image serves the objects larger than a tile, which no tile can hold; smaller ones the tiles see
        # at the training scale (whole, or cut and joined), and their coarse whole-image boxes only add duplicates
        # and false positives (every whole-image box kept: 49.8 instead of 53.5 AP, docs/own_data.md)
        sides = (whole["boxes"][:, 2:] - whole["boxes"][:, :2]).max(dim=1).values
        keep = sides > size
        whole = {k: v[keep] for k, v in whole.items()}
    return merge_tile_detections(tiles, per_tile, image_hw=(height, width), nms_thresh=cfg.test.nms_thresh,
                                 whole=whole, edge_margin=max(1.0, EDGE_MARGIN_FRAC * size))


def run_tiled_inference(model: Model, dataset, cfg, device: torch.device, *, show_progress: bool = True
                        ) -> dict[int, dict[str, np.ndarray]]:
    """`run_inference`'s result ({image_id: boxes/scores/labels in original pixels}) with `detect_image` on each
    original image of a DetectionDataset's records (tools/test_det.py with test.tile_size > 0; single process)."""
    if hasattr(model, "eval"):
        model.eval()
    results: dict[int, dict[str, np.ndarray]] = {}
    for rec in progress_bar(dataset.records, desc="tiled inference", enabled=show_progress, leave=False):
        det = detect_image(model, read_image_rgb(rec.image_path, max_pixels=cfg.data.input.max_pixels), cfg, device)
        boxes = det["boxes"].numpy().astype(np.float32)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, rec.width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, rec.height)
        results[rec.image_id] = {"boxes": boxes, "scores": det["scores"].numpy(),
                                 "labels": det["labels"].numpy().astype(np.int64)}
    return results
