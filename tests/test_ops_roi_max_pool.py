"""roi_max_pool must equal torchvision.ops.roi_pool exactly: it replaces it at inference."""

import pytest
import torch
from torchvision.ops import roi_pool

from detres.ops.roi_max_pool import _odd_sizes, roi_max_pool


def _random_boxes(count: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    # Boxes inside and across the image border, plus degenerate ones (x2 < x1): every clipping branch.
    start = torch.rand(count, 2, generator=generator) * torch.tensor([width * 16.0, height * 16.0]) - 20
    size = torch.rand(count, 2, generator=generator) * torch.tensor([width * 16.0, height * 16.0])
    boxes = torch.cat([start, start + size], dim=1)
    boxes[:4, 2:] = boxes[:4, :2] - 3
    return boxes


@pytest.mark.parametrize("output_size", [14, 7])
@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_torchvision_roi_pool(output_size, channels_last):
    generator = torch.Generator().manual_seed(0)
    for height, width in ((20, 31), (23, 17)):
        features = torch.randn(2, 6, height, width, generator=generator)
        if channels_last:
            features = features.contiguous(memory_format=torch.channels_last)
        boxes = [_random_boxes(30, height, width, generator), _random_boxes(25, height, width, generator)]
        expected = roi_pool(features, boxes, (output_size, output_size), 1 / 16)
        assert torch.equal(roi_max_pool(features, boxes, output_size, 1 / 16), expected)


def test_odd_float_bin_sizes_are_delegated_and_exact():
    # 57 and 62 cells are sizes whose float32 bin edges differ from integer adaptive pooling at P = 14.
    assert _odd_sizes(14, 64).nonzero().flatten().tolist() == [57, 62]
    features = torch.randn(1, 3, 70, 70)
    boxes = [torch.tensor([[0.0, 0.0, 56 * 16.0, 61 * 16.0], [8.0, 8.0, 61 * 16.0 + 8, 56 * 16.0 + 8]])]
    assert torch.equal(roi_max_pool(features, boxes, 14, 1 / 16), roi_pool(features, boxes, (14, 14), 1 / 16))


def test_no_rois_and_autograd_fall_back():
    features = torch.randn(1, 4, 10, 10, requires_grad=True)
    boxes = [torch.tensor([[0.0, 0.0, 80.0, 80.0]])]
    pooled = roi_max_pool(features, boxes, 7, 1 / 16)
    pooled.sum().backward()  # torchvision's op (with its backward) when gradients are needed
    assert features.grad is not None and features.grad.sum() > 0
    empty = roi_max_pool(features.detach(), [torch.zeros(0, 4)], 7, 1 / 16)
    assert empty.shape == (0, 4, 7, 7)


def test_bfloat16_features_pool_like_float32():
    # Under CPU bfloat16 autocast the map is bfloat16, which torchvision's CPU op rejects; max pooling is exact
    # under the cast, so the float32 result cast back is the reference.
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(1, 5, 70, 70, generator=generator).to(torch.bfloat16)
    boxes = [torch.cat([_random_boxes(20, 70, 70, generator), torch.tensor([[0.0, 0.0, 56 * 16.0, 40.0]])])]
    expected = roi_pool(features.float(), boxes, (14, 14), 1 / 16).to(torch.bfloat16)
    assert torch.equal(roi_max_pool(features, boxes, 14, 1 / 16), expected)
