"""Parameter and multiply-add counts (torch.utils.flop_counter), as the paper's Table 1 reports them."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def multiply_adds(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Multiply-adds of one forward pass (FLOPs / 2), counted on the meta device: no memory, no compute."""
    meta_model = model.to("meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta_model(torch.empty(input_shape, device="meta"))
    return counter.get_total_flops() / 2
