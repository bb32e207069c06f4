"""Complexity of the ResNet family against the paper's Table 1 (original layout, 224x224)."""

import pytest
import torch

from detres.modeling import resnet as R
from detres.modeling.complexity import count_parameters, multiply_adds

PAPER = {34: 3.6e9, 50: 3.8e9, 101: 7.6e9, 152: 11.3e9}


@pytest.mark.parametrize("depth", sorted(PAPER))
def test_multiply_adds_match_the_paper_within_5_percent(depth):
    with torch.device("meta"):
        model = getattr(R, f"resnet{depth}")(stride_in_1x1=True)
    assert abs(multiply_adds(model, (1, 3, 224, 224)) - PAPER[depth]) / PAPER[depth] < 0.05


def test_multiply_adds_of_one_conv_by_hand():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert multiply_adds(conv, (1, 3, 10, 10)) == 8 * 3 * 9 * 10 * 10
    assert count_parameters(conv) == 8 * 3 * 9
