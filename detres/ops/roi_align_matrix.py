"""RoIAlign (aligned=True) as one sparse matrix product: the training path of the RoIAlign pooler on CPU.

Written by hand because torchvision's CPU `roi_align` backward is a single-threaded scalar loop: on the demo
config it was 28% of a training step. RoIAlign is linear in the feature map: every output bin is a fixed weighted
sum of map cells (bilinear weights of its sampling points, divided by their count). So the whole batch's pooling is
`W @ map` with a sparse W of shape [R*P*P, B*H*W], and its gradient `W^T @ grad`; PyTorch's multi-threaded sparse
product computes both. The sampling points, boundary rules and adaptive grid are torchvision's (aligned=True), so
the outputs agree with `torchvision.ops.roi_align` to float rounding (tested, forward and gradient).
"""

from __future__ import annotations

import torch
from torch import Tensor


def roi_align_matrix(features: Tensor, boxes: list[Tensor], output_size: int, spatial_scale: float,
                     sampling_ratio: int) -> Tensor:
    """torchvision.ops.roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned=True).

    features: [B, C, H, W]; boxes: per image [R_i, 4] XYXY input pixels. Returns [sum R_i, C, P, P] (channels-last
    strides) in the features' dtype, differentiable with respect to `features`.
    """
    batch, channels, height, width = features.shape
    rois = torch.cat([b.detach().float() for b in boxes]) if boxes else features.new_zeros(0, 4, dtype=torch.float32)
    image_index = torch.cat([torch.full((len(b),), i, dtype=torch.int64, device=rois.device)
                             for i, b in enumerate(boxes)]) if boxes else torch.zeros(0, dtype=torch.int64)
    size = (len(rois), output_size, output_size, channels)
    if len(rois) == 0:
        return features.new_zeros(size).permute(0, 3, 1, 2)
    index, value = _sampling_weights(rois, image_index, height, width, output_size, spatial_scale, sampling_ratio)
    matrix = torch.sparse_coo_tensor(index, value, (len(rois) * output_size ** 2, batch * height * width),
                                     check_invariants=False)  # built in range by construction
    cells = features.float().permute(0, 2, 3, 1).reshape(batch * height * width, channels)  # [B*H*W, C]
    with torch.autocast(features.device.type, enabled=False):  # float32 weights: autocast would mix dtypes
        pooled = torch.sparse.mm(matrix.coalesce(), cells)  # [R*P*P, C]
    return pooled.to(features.dtype).view(size).permute(0, 3, 1, 2)


def _sampling_weights(rois: Tensor, image_index: Tensor, height: int, width: int, pooled: int, scale: float,
                      sampling_ratio: int) -> tuple[Tensor, Tensor]:
    """COO (row, col) indices [2, N] and values [N] of W: row = (roi, bin_y, bin_x), col = (image, y, x)."""
    start_x, start_y = rois[:, 0] * scale - 0.5, rois[:, 1] * scale - 0.5  # aligned=True: pixel centres at +0.5
    roi_w, roi_h = rois[:, 2] * scale - 0.5 - start_x, rois[:, 3] * scale - 0.5 - start_y
    bin_w, bin_h = roi_w / pooled, roi_h / pooled
    if sampling_ratio > 0:
        grid_w = grid_h = torch.full_like(image_index, sampling_ratio)
    else:  # torchvision's adaptive grid: ceil(roi size / bins) samples per bin and axis (none for an empty RoI)
        grid_w, grid_h = torch.ceil(roi_w / pooled).long().clamp(min=0), torch.ceil(roi_h / pooled).long().clamp(min=0)
    count = (grid_w * grid_h).clamp(min=1).float()
    ys = _axis_samples(start_y, bin_h, grid_h, pooled, height)
    xs = _axis_samples(start_x, bin_w, grid_w, pooled, width)
    roi, yi, xi = _pairs(pooled * grid_h, pooled * grid_w)  # every y sample of a RoI with every x sample of it
    keep = ys["valid"][yi] & xs["valid"][xi]  # a sample outside [-1, size] adds nothing (torchvision's rule)
    roi, yi, xi = roi[keep], yi[keep], xi[keep]
    row = (roi * pooled + ys["bin"][yi]) * pooled + xs["bin"][xi]
    plane = image_index[roi] * (height * width)
    rows, cols, values = [], [], []
    for y_cell, y_weight in ((ys["low"], ys["w_low"]), (ys["high"], ys["w_high"])):
        for x_cell, x_weight in ((xs["low"], xs["w_low"]), (xs["high"], xs["w_high"])):
            rows.append(row)
            cols.append(plane + y_cell[yi] * width + x_cell[xi])
            values.append(y_weight[yi] * x_weight[xi] / count[roi])
    return torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(values)


def _axis_samples(start: Tensor, bin_size: Tensor, grid: Tensor, pooled: int, size: int) -> dict[str, Tensor]:
    """Along one axis, every sample of every RoI (RoI-major, then bin, then sample): its bin, validity, the two
    neighbouring cells and their bilinear weights, with torchvision's clamping at the map's border."""
    roi, k = _ranges(pooled * grid)
    per_roi = grid[roi]
    bin_index, sample = k // per_roi, k % per_roi
    pos = start[roi] + bin_index * bin_size[roi] + (sample.float() + 0.5) * bin_size[roi] / per_roi.float()
    valid = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    low = pos.long()  # truncation; pos >= 0
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(pos), pos - low.float())
    return {"bin": bin_index, "valid": valid, "low": low, "high": high, "w_low": 1.0 - frac, "w_high": frac}


def _ranges(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For counts [R]: (owner [sum], position within owner [sum]) — a flattened ragged arange."""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    return owner, torch.arange(int(counts.sum()), device=counts.device) - starts[owner]


def _pairs(ny: Tensor, nx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """All (y sample, x sample) pairs within each RoI, as (roi, global y index, global x index)."""
    roi, k = _ranges(ny * nx)
    y_start, x_start = torch.cumsum(ny, 0) - ny, torch.cumsum(nx, 0) - nx
    return roi, k // nx[roi] + y_start[roi], k % nx[roi] + x_start[roi]
