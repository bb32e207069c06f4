"""How well the anchors cover the ground truth, and anchors (and an input scale) fitted to a dataset's boxes.

Coverage is measured the way the RPN labels anchors: each box against the anchors of the configured sizes and
ratios placed at the stride-16 grid point nearest to its centre (AnchorGenerator's exact cell anchors and
centres), not a shape-only IoU that puts every anchor on the box's centre. Shape-only IoU overstates the
coverage of small boxes badly: a 32-px box half a cell (8 px in x and y) from its 32-px anchor has IoU 0.39, not
1.0, and the RPN trains on the 0.39. The nearest grid point is the best one for every anchor shape (IoU of two
axis-aligned boxes falls monotonically with the offset along each axis), so one point per box is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.ops import box_iou

from detres.data.records import DetRecord
from detres.data.stats import ScaledBoxes, scaled_boxes
from detres.modeling.anchors import AnchorGenerator
from detres.modeling.faster_rcnn import TRUNK_STRIDE

# candidate end points of the geometric series of sizes, as percentiles of the boxes' sqrt(w*h)
LOW_PERCENTILES = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
HIGH_PERCENTILES = (80.0, 90.0, 95.0, 98.0, 99.0, 99.5)
UPSCALES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)  # input scale factors tried, smallest first (cost grows as f^2)


def best_anchor_iou(table: ScaledBoxes, *, sizes: list[float], ratios: list[float],
                    stride: int = TRUNK_STRIDE) -> torch.Tensor:
    """[N] IoU of each box with its best anchor at the nearest grid point (module docstring)."""
    cell = AnchorGenerator(sizes=list(sizes), aspect_ratios=list(ratios), stride=stride).cell_anchors  # [A, 4]
    boxes = torch.from_numpy(table.boxes).float()
    # the feature map of a (padded) h x w input has ceil(h / stride) x ceil(w / stride) points at i * stride
    last = torch.from_numpy(np.ceil(table.image_hw / stride) - 1).float()  # [N, 2] (y, x)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    gx = torch.minimum(torch.round(cx / stride), last[:, 1]).clamp(min=0) * stride
    gy = torch.minimum(torch.round(cy / stride), last[:, 0]).clamp(min=0) * stride
    relative = boxes - torch.stack([gx, gy, gx, gy], dim=1)  # the box in its grid point's frame
    return box_iou(relative, cell).max(dim=1).values


def coverage(table: ScaledBoxes, *, sizes: list[float], ratios: list[float], thresholds=(0.5, 0.7)
             ) -> dict[str, float]:
    """{"iou>=0.5": fraction, "iou>=0.7": fraction} of boxes whose best anchor reaches the threshold."""
    best = best_anchor_iou(table, sizes=sizes, ratios=ratios)
    return {f"iou>={t}": round(float((best >= t).float().mean()), 4) for t in thresholds}


@dataclass
class AnchorFit:
    """A proposal: anchors and input sizes, and the coverage they reach on the training boxes."""

    anchor_sizes: list[float]
    aspect_ratios: list[float]
    train_scales: list[int]
    test_scale: int
    max_size: int
    coverage: dict[str, float] = field(default_factory=dict)
    reached: bool = False  # whether coverage at the target IoU reached the target fraction

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_sizes) * len(self.aspect_ratios)

    def overrides(self) -> list[str]:
        """KEY=VALUE lines for any tool's command line."""
        return [f"model.rpn.anchor_sizes=[{','.join(f'{s:g}' for s in self.anchor_sizes)}]",
                f"model.rpn.aspect_ratios=[{','.join(f'{r:g}' for r in self.aspect_ratios)}]",
                f"data.input.train_scales=[{','.join(str(s) for s in self.train_scales)}]",
                f"data.input.test_scale={self.test_scale}", f"data.input.max_size={self.max_size}"]

    def yaml(self) -> str:
        """The same as a YAML fragment for a config file."""
        return (f"model:\n  rpn:\n    anchor_sizes: [{', '.join(f'{s:g}' for s in self.anchor_sizes)}]\n"
                f"    aspect_ratios: [{', '.join(f'{r:g}' for r in self.aspect_ratios)}]\n"
                f"data:\n  input:\n    train_scales: [{', '.join(str(s) for s in self.train_scales)}]\n"
                f"    test_scale: {self.test_scale}\n    max_size: {self.max_size}\n")


def _subset(table: ScaledBoxes, max_boxes: int, seed: int) -> ScaledBoxes:
    if len(table) <= max_boxes:
        return table
    idx = np.sort(np.random.default_rng(seed).choice(len(table), max_boxes, replace=False))
    return ScaledBoxes(table.boxes[idx], table.labels[idx], table.image_hw[idx], table.scale[idx])


def _candidate_sizes(side: np.ndarray, count: int) -> list[list[float]]:
    """Geometric series of `count` sizes between low and high percentiles of the box sides (one size: the
    geometric median). Whole pixels: the anchor corners are rounded anyway."""
    if count == 1:
        return [[float(round(np.exp(np.median(np.log(side)))))]]
    out = []
    for lo in LOW_PERCENTILES:
        for hi in HIGH_PERCENTILES:
            a, b = np.percentile(side, lo), np.percentile(side, hi)
            sizes = sorted({float(round(v)) for v in np.geomspace(a, max(b, a * 1.01), count)})
            if len(sizes) == count and sizes not in out:
                out.append(sizes)
    return out


def _candidate_ratios(ratio: np.ndarray, count: int) -> list[float]:
    """`count` ratios h/w at evenly spaced quantiles of the boxes' log ratio (one ratio: the median), 2 decimals."""
    q = [(i + 0.5) / count for i in range(count)]
    return sorted({round(float(np.exp(v)), 2) for v in np.quantile(np.log(ratio), q)})


def fit_anchors(table: ScaledBoxes, *, target: float = 0.99, iou: float = 0.5, max_anchors: int = 15,
                max_ratios: int = 5, max_boxes: int = 4000, seed: int = 0
                ) -> tuple[list[float], list[float], float]:
    """(sizes, ratios, coverage at `iou`) with the fewest anchors (sizes x ratios) whose coverage reaches
    `target`, or the best coverage found within `max_anchors` when none does.

    Search: for each (number of sizes k, number of ratios m) in increasing k*m, the ratios are the m quantiles
    of the log aspect ratio and the sizes a geometric series over the box sides whose end points are tried at
    several percentiles; coverage is measured on a sample of at most `max_boxes` boxes, the result on all.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny IoU matrices: thread start-up costs ~20x the work (measured)
    try:
        return _search(table, target=target, iou=iou, max_anchors=max_anchors, max_ratios=max_ratios,
                       max_boxes=max_boxes, seed=seed)
    finally:
        torch.set_num_threads(threads)


def _search(table: ScaledBoxes, *, target: float, iou: float, max_anchors: int, max_ratios: int, max_boxes: int,
            seed: int) -> tuple[list[float], list[float], float]:
    sample = _subset(table, max_boxes, seed)
    side = np.sqrt(np.maximum(sample.widths * sample.heights, 1e-6))
    ratio = np.maximum(sample.heights, 1e-6) / np.maximum(sample.widths, 1e-6)
    shapes = sorted(((k, m) for m in range(1, max_ratios + 1) for k in range(1, max_anchors // m + 1)),
                    key=lambda km: (km[0] * km[1], km[1]))
    best: tuple[float, list[float], list[float]] = (-1.0, [], [])
    for k, m in shapes:
        ratios = _candidate_ratios(ratio, m)
        if len(ratios) < m:
            continue  # the quantiles coincide: fewer distinct ratios than asked, already tried
        for sizes in _candidate_sizes(side, k):
            cov = float((best_anchor_iou(sample, sizes=sizes, ratios=ratios) >= iou).float().mean())
            if cov > best[0]:
                best = (cov, sizes, ratios)
        if best[0] >= target:
            break
    _, sizes, ratios = best
    full = float((best_anchor_iou(table, sizes=sizes, ratios=ratios) >= iou).float().mean())
    return sizes, ratios, full


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def fit_anchors_and_scale(records: list[DetRecord], *, train_scales: list[int], test_scale: int, max_size: int,
                          target: float = 0.99, iou: float = 0.5, max_anchors: int = 15,
                          max_upscale: float = 4.0) -> AnchorFit:
    """Anchors at the configured input scale when they reach `target`; otherwise the smallest input upscale
    (shorter side, max_size and test scale times 1.25, 1.5, 2, ... up to `max_upscale`) at which they do.

    Upscaling is what a stride-16 RPN needs for small objects: a box under ~40 px cannot reach IoU 0.5 with any
    anchor when its centre falls between grid points. The scale is never lowered (that trades accuracy for speed,
    the user's call). When no scale reaches the target, the proposal with the best coverage is returned.
    """
    best: AnchorFit | None = None
    for factor in [f for f in UPSCALES if f <= max_upscale]:
        scales = [_round_to(s * factor, TRUNK_STRIDE) for s in train_scales] if factor != 1.0 else list(train_scales)
        longest = _round_to(max_size * factor, TRUNK_STRIDE) if factor != 1.0 else max_size
        table = scaled_boxes(records, scales=scales, max_size=longest)
        sizes, ratios, cov = fit_anchors(table, target=target, iou=iou, max_anchors=max_anchors)
        fit = AnchorFit(anchor_sizes=sizes, aspect_ratios=ratios, train_scales=scales,
                        test_scale=_round_to(test_scale * factor, TRUNK_STRIDE) if factor != 1.0 else test_scale,
                        max_size=longest, coverage=coverage(table, sizes=sizes, ratios=ratios,
                                                            thresholds=sorted({iou, 0.5, 0.7})),
                        reached=cov >= target)
        if fit.reached:
            return fit
        if best is None or cov > best.coverage[f"iou>={iou}"]:
            best = fit
    assert best is not None
    return best


def scale_note(fit: AnchorFit, train_scales: list[int]) -> str:
    """One line on what the proposed scale costs, for the tool's output."""
    factor = fit.train_scales[0] / train_scales[0]
    if math.isclose(factor, 1.0):
        return "input scale unchanged"
    return (f"input upscaled x{factor:g} so that small boxes reach the anchors' IoU at stride {TRUNK_STRIDE} "
            f"(about x{factor * factor:.1f} the compute per image)")
