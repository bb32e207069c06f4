"""Tiled inference for large images, the pure part: the tile grid and the merge of per-tile detections.

The merge rule, in one place (see `merge_tile_detections`):
1. A box that touches an edge of its tile lying inside the image (within `edge_margin` pixels) is *truncated*:
   the tile saw only part of its object. Edges that are image edges do not truncate anything.
2. The grid overlaps neighbouring tiles by at least `overlap * size` pixels, so every object no larger than that
   lies whole in some tile (`tile_grid` proves the 1-D case in its docstring), where it gets a full box. A
   truncated box whose area lies mostly (>= 50%) inside a full box of the same class is that object's partial view:
   it is dropped.
3. The remaining truncated boxes belong to objects too large for any tile. Two of them of the same class from
   different tiles are parts of one object when, in the area both tiles see, they agree: the part of box A inside
   tile B and the part of box B inside tile A have IoU >= `join_iou`. Such parts are joined into their union
   (score: the best part's), transitively (an object spanning three tiles is joined from three parts).
4. Everything left, plus the optional whole-image detections, goes through class-wise NMS
   (torchvision batched_nms), which removes the duplicates of an object seen whole by two overlapping tiles.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

from detres.errors import ConfigError


def _axis_starts(length: int, size: int, overlap: float) -> list[int]:
    """Tile start offsets along one axis: the first at 0, the last ending at `length`, spread evenly."""
    if length <= size:
        return [0]
    step = size * (1.0 - overlap)
    count = math.ceil((length - size) / step) + 1
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def tile_grid(height: int, width: int, *, size: int, overlap: float) -> Tensor:
    """[T, 4] int64 XYXY tiles of side `size` (smaller only where the image is) that cover the image exactly.

    Neighbouring tiles share at least `overlap * size` pixels (the starts are spread evenly, so the shared strip
    is at least that, never less). Hence an object whose extent along an axis is <= the shared strip lies whole in
    one tile along that axis: take the last tile starting at or before the object's start a; the next tile starts
    after a, so the object's end b <= a + strip < next start + strip <= this tile's end. Tiles are ordered by row.
    """
    if size <= 0:
        raise ConfigError(f"test.tile_size must be a positive number of pixels, got {size}; for example 800")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"test.tile_overlap must be a fraction in [0, 1), got {overlap}; for example 0.25")
    ys, xs = _axis_starts(height, size, overlap), _axis_starts(width, size, overlap)
    tiles = [[x, y, min(x + size, width), min(y + size, height)] for y in ys for x in xs]
    return torch.tensor(tiles, dtype=torch.int64).reshape(-1, 4)


def truncated_mask(boxes: Tensor, tile: Tensor, *, image_hw: tuple[int, int], edge_margin: float) -> Tensor:
    """[N] bool: box (image pixels) within `edge_margin` of an edge of `tile` that is not an image edge."""
    height, width = image_hw
    x1, y1, x2, y2 = (float(v) for v in tile)
    cut = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    if x1 > 0:
        cut |= boxes[:, 0] <= x1 + edge_margin
    if y1 > 0:
        cut |= boxes[:, 1] <= y1 + edge_margin
    if x2 < width:
        cut |= boxes[:, 2] >= x2 - edge_margin
    if y2 < height:
        cut |= boxes[:, 3] >= y2 - edge_margin
    return cut


def _intersect(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise intersection box of a [N, 4] and b [N, 4] (may be empty: x2 < x1)."""
    return torch.cat([torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])], dim=1)


def _area(b: Tensor) -> Tensor:
    return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)


def _join_parts(boxes: Tensor, scores: Tensor, labels: Tensor, tiles: Tensor, join_iou: float
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Rule 3: union of the truncated parts that agree where their tiles overlap; tiles: [N, 4] each box's tile."""
    n = boxes.shape[0]
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n > 1:
        ii, jj = torch.triu_indices(n, n, offset=1, device=boxes.device)
        same = (labels[ii] == labels[jj]) & (tiles[ii] != tiles[jj]).any(dim=1)
        ii, jj = ii[same], jj[same]
        # the part of box i that tile j sees, against the part of box j that tile i sees
        a = _intersect(boxes[ii], tiles[jj].to(boxes.dtype))
        b = _intersect(boxes[jj], tiles[ii].to(boxes.dtype))
        inter = _area(_intersect(a, b))
        iou = inter / (_area(a) + _area(b) - inter).clamp(min=1e-6)
        for i, j in zip(ii[iou >= join_iou].tolist(), jj[iou >= join_iou].tolist()):
            parent[find(i)] = find(j)
    roots = torch.tensor([find(i) for i in range(n)], dtype=torch.int64, device=boxes.device)
    groups = torch.unique(roots)
    out_boxes = torch.stack([torch.cat([boxes[roots == g, :2].min(0).values, boxes[roots == g, 2:].max(0).values])
                             for g in groups]) if n else boxes
    out_scores = torch.stack([scores[roots == g].max() for g in groups]) if n else scores
    out_labels = labels[groups] if n else labels
    return out_boxes, out_scores, out_labels


def merge_tile_detections(tiles: Tensor, per_tile: list[dict[str, Tensor]], *, image_hw: tuple[int, int],
                          nms_thresh: float, whole: dict[str, Tensor] | None = None, edge_margin: float = 2.0,
                          contain_frac: float = 0.5, join_iou: float = 0.5) -> dict[str, Tensor]:
    """Detections of every tile (boxes already in image pixels) -> one set for the image; rules in the module doc.

    tiles: [T, 4] from `tile_grid`; per_tile: T dicts of boxes [K, 4], scores [K], labels [K];
    whole: optional detections of the whole image (never truncated). Returns boxes/scores/labels sorted by score.
    """
    boxes, scores, labels, owner, cut = [], [], [], [], []
    for tile, det in zip(tiles, per_tile):
        b = det["boxes"].float().reshape(-1, 4)
        boxes.append(b)
        scores.append(det["scores"].float())
        labels.append(det["labels"].long())
        owner.append(tile.reshape(1, 4).expand(b.shape[0], 4))
        cut.append(truncated_mask(b, tile, image_hw=image_hw, edge_margin=edge_margin))
    if whole is not None:
        b = whole["boxes"].float().reshape(-1, 4)
        boxes.append(b)
        scores.append(whole["scores"].float())
        labels.append(whole["labels"].long())
        owner.append(torch.tensor([[0, 0, image_hw[1], image_hw[0]]]).expand(b.shape[0], 4))
        cut.append(torch.zeros(b.shape[0], dtype=torch.bool))
    if not boxes:
        return {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    boxes_t, scores_t, labels_t = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    owner_t, cut_t = torch.cat(owner).to(boxes_t.device), torch.cat(cut).to(boxes_t.device)
    full, part = ~cut_t, cut_t
    # rule 2: a partial view mostly inside a full box of its class is dropped
    pb, pl = boxes_t[part], labels_t[part]
    fb, fl = boxes_t[full], labels_t[full]
    if pb.shape[0] and fb.shape[0]:
        inter = _area_pairwise_intersection(pb, fb)
        contained = (inter / _area(pb).clamp(min=1e-6)[:, None] >= contain_frac) & (pl[:, None] == fl[None, :])
        keep_part = ~contained.any(dim=1)
    else:
        keep_part = torch.ones(pb.shape[0], dtype=torch.bool, device=boxes_t.device)
    jb, js, jl = _join_parts(pb[keep_part], scores_t[part][keep_part], pl[keep_part], owner_t[part][keep_part],
                             join_iou)
    all_boxes = torch.cat([fb, jb])
    all_scores = torch.cat([scores_t[full], js])
    all_labels = torch.cat([fl, jl])
    keep = batched_nms(all_boxes, all_scores, all_labels, nms_thresh)  # rule 4; sorted by score
    return {"boxes": all_boxes[keep], "scores": all_scores[keep], "labels": all_labels[keep]}


def _area_pairwise_intersection(a: Tensor, b: Tensor) -> Tensor:
    """[N, M] intersection areas; torchvision's box_iou gives IoU, and IoU * union recovers the intersection."""
    iou = box_iou(a, b)
    area_a, area_b = _area(a)[:, None], _area(b)[None, :]
    # iou = I / (A + B - I)  =>  I = iou * (A + B) / (1 + iou)
    return iou * (area_a + area_b) / (1.0 + iou)
