"""roi_align_matrix (the training path of the RoIAlign pooler on CPU) equals torchvision's roi_align, forward and
gradient."""

import pytest
import torch
from torchvision.ops import roi_align

from detres.ops.roi_align_matrix import roi_align_matrix


def _boxes(count: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    # inside the map, across its border (partly and wholly outside), tiny, large, and degenerate (x2 < x1)
    start = torch.rand(count, 2, generator=generator) * torch.tensor([width * 16.0, height * 16.0]) - 40
    size = torch.rand(count, 2, generator=generator) ** 2 * torch.tensor([width * 20.0, height * 20.0])
    boxes = torch.cat([start, start + size], dim=1)
    boxes[:3, 2:] = boxes[:3, :2] - 5
    return boxes


@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("output_size", [14, 7])
def test_forward_and_gradient_equal_torchvision(sampling_ratio, output_size):
    generator = torch.Generator().manual_seed(sampling_ratio + output_size)
    features = torch.randn(2, 5, 13, 19, generator=generator)
    boxes = [_boxes(40, 13, 19, generator), _boxes(25, 13, 19, generator)]
    weights = torch.randn(65, 5, output_size, output_size, generator=generator)
    ours_in, ref_in = features.clone().requires_grad_(), features.clone().requires_grad_()
    ours = roi_align_matrix(ours_in, boxes, output_size, 1 / 16, sampling_ratio)
    ref = roi_align(ref_in, boxes, output_size, 1 / 16, sampling_ratio, aligned=True)
    assert ref.abs().sum() > 0
    assert torch.allclose(ours, ref, atol=1e-5)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    assert torch.allclose(ours_in.grad, ref_in.grad, atol=1e-4)


def test_no_boxes_and_bfloat16():
    features = torch.randn(1, 3, 8, 8)
    assert roi_align_matrix(features, [torch.zeros(0, 4)], 7, 1 / 16, 0).shape == (0, 3, 7, 7)
    boxes = [torch.tensor([[4.0, 4.0, 100.0, 60.0]])]
    half = roi_align_matrix(features.bfloat16(), boxes, 7, 1 / 16, 0)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), roi_align(features, boxes, 7, 1 / 16, 0, aligned=True), atol=0.05)
