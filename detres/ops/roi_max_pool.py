"""RoI max pooling equal to torchvision.ops.roi_pool, fast on CPU.

torchvision's CPU roi_pool is one single-threaded scalar loop over RoIs x channels x bins that also writes an argmax
tensor; at 300 RoIs on a 1024-channel C4 map it costs ~14% of a R-101 inference. Its bins are the same as
`adaptive_max_pool2d`'s on the RoI's crop of the map (start = floor(i * n / P), end = ceil((i + 1) * n / P)),
except that torchvision computes them in float32, which for a few crop sizes n (57, 62, 114 ... for P = 14)
rounds one bin edge differently. So each RoI whose crop size is one of those goes to torchvision's op and every
other RoI to the vectorized, multi-threaded adaptive_max_pool2d kernel: the output is identical, bit for bit.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_pool


def roi_max_pool(features: Tensor, boxes: list[Tensor], output_size: int, spatial_scale: float) -> Tensor:
    """torchvision.ops.roi_pool(features, boxes, output_size, spatial_scale), computed faster on CPU.

    features: [B, C, H, W] (any memory format); boxes: per image [R_i, 4] XYXY in input-image pixels.
    Returns [sum R_i, C, P, P], channels-last (the pooling kernel is vectorized over channels only in that
    layout, so NCHW features are converted once). Also takes bfloat16/float16 (autocast), which torchvision's
    CPU op does not. Other devices and autograd use torchvision's op as is.
    """
    size = (output_size, output_size)
    if features.device.type != "cpu" or features.requires_grad or not features.is_floating_point():
        return _torchvision_roi_pool(features, boxes, size, spatial_scale)
    rois = torch.cat([b.float() for b in boxes]) if boxes else features.new_zeros(0, 4)
    image_index = torch.cat([torch.full((len(b),), i, dtype=torch.int64) for i, b in enumerate(boxes)]) \
        if boxes else torch.zeros(0, dtype=torch.int64)
    num_rois, channels = len(rois), features.shape[1]
    memory_format = torch.channels_last
    features = features.contiguous(memory_format=memory_format)
    output = torch.empty((num_rois, channels, output_size, output_size), dtype=features.dtype,
                         memory_format=memory_format)
    if num_rois == 0:
        return output

    # torchvision's quantization: C's round() (half away from zero) of float32 box * scale; crop size end-start+1.
    scaled = rois.cpu() * torch.tensor(spatial_scale, dtype=torch.float32)
    corners = (torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)).to(torch.int64)
    x1, y1 = corners[:, 0], corners[:, 1]
    roi_w = (corners[:, 2] - x1 + 1).clamp(min=1)
    roi_h = (corners[:, 3] - y1 + 1).clamp(min=1)

    odd = _float_bin_sizes(output_size, int(max(roi_w.max(), roi_h.max())))
    slow = odd[roi_h] | odd[roi_w]
    if bool(slow.any()):
        slow_rois = torch.cat([image_index[slow, None].float(), rois.cpu()[slow]], dim=1)
        # torchvision's CPU op has no bfloat16/float16 kernel; max pooling in float32 and back is exact.
        exact = roi_pool(features.float(), slow_rois.to(features.device).float(), size, spatial_scale)
        output[slow] = exact.to(features.dtype)

    # -inf padding where a RoI crosses the map's border: outside cells then never win a max, and a bin that lies
    # wholly outside comes out -inf, which becomes torchvision's 0 for empty bins.
    height, width = features.shape[2:]
    pad_top = max(0, -int(y1.min()))
    pad_left = max(0, -int(x1.min()))
    pad_bottom = max(0, int((y1 + roi_h).max()) - height)
    pad_right = max(0, int((x1 + roi_w).max()) - width)
    padded = features
    if pad_top or pad_left or pad_bottom or pad_right:
        padded = F.pad(features, (pad_left, pad_right, pad_top, pad_bottom), value=-math.inf)

    rows = torch.stack((image_index, y1 + pad_top, x1 + pad_left, roi_h, roi_w, (~slow).long()), dim=1).tolist()
    for i, (b, top, left, h, w, fast) in enumerate(rows):
        if not fast:
            continue
        # A compact copy of the crop first: the pooling kernel is ~2x slower on a strided view.
        crop = padded[b:b + 1, :, top:top + h, left:left + w].contiguous(memory_format=memory_format)
        pooled = F.adaptive_max_pool2d(crop, size)
        crosses = top < pad_top or left < pad_left or top + h > pad_top + height or left + w > pad_left + width
        if crosses:
            pooled = pooled.masked_fill(pooled == -math.inf, 0.0)
        output[i] = pooled[0]
    return output


@lru_cache(maxsize=16)
def _odd_sizes(output_size: int, limit: int) -> Tensor:
    """Bool [limit + 1]: crop sizes n whose float32 bin edges differ from adaptive pooling's integer ones."""
    n = torch.arange(limit + 1, dtype=torch.int64)
    p = torch.arange(output_size, dtype=torch.int64)
    bin_size = n.to(torch.float32)[:, None] / torch.tensor(float(output_size), dtype=torch.float32)
    start = torch.floor(p.to(torch.float32)[None, :] * bin_size).to(torch.int64)
    end = torch.ceil((p + 1).to(torch.float32)[None, :] * bin_size).to(torch.int64)
    int_start = (p[None, :] * n[:, None]) // output_size
    int_end = -((-(p[None, :] + 1) * n[:, None]) // output_size)
    return ((start != int_start) | (end != int_end)).any(dim=1)


def _float_bin_sizes(output_size: int, largest: int) -> Tensor:
    # Cache in powers of two so every call does not rebuild the table.
    return _odd_sizes(output_size, 1 << max(6, largest.bit_length()))


def _torchvision_roi_pool(features: Tensor, boxes: list[Tensor], size: tuple[int, int], scale: float) -> Tensor:
    """torchvision's op; bfloat16/float16 features (training under solver.amp) pool in float32, since its CPU op
    has no such kernel and its rois must match the features' dtype, and a max is exact in float32 anyway."""
    if features.dtype in (torch.bfloat16, torch.float16):
        return roi_pool(features.float(), [b.float() for b in boxes], size, scale).to(features.dtype)
    return roi_pool(features, [b.to(features.dtype) for b in boxes], size, scale)
