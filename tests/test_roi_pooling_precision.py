"""The RoI head's pooling under autocast (solver.amp, test.precision=bf16): it trains on CPU with either pooler,
and boxes keep float32 coordinates while the features are bfloat16."""

import pytest
import torch

from detres.config import load_config
from detres.modeling.faster_rcnn import build_faster_rcnn
from detres.perf.synthetic import synthetic_batch


def _head(pooler: str):
    cfg = load_config(None, ["model.backbone.depth=50", "model.backbone.width=8", "model.num_classes=3",
                             f"model.roi_head.pooler={pooler}"])
    return build_faster_rcnn(cfg).roi_head


@pytest.mark.parametrize("pooler", ["roi_pool", "roi_align"])
def test_bfloat16_features_pool_at_float32_box_coordinates(pooler):
    head = _head(pooler)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, 4, 40, 50, generator=generator).to(torch.bfloat16)
    # 599.0 rounds to 600.0 in bfloat16, which moves roi_pool's quantized start from cell 37 to cell 38
    boxes = [torch.tensor([[599.0, 101.3, 790.7, 310.1], [17.2, 33.9, 250.4, 401.6]])]
    for requires_grad in (False, True):
        half = features.clone().requires_grad_(requires_grad)
        pooled = head.pool(half, boxes)
        expected = head.pool(features.float().requires_grad_(requires_grad), boxes).to(torch.bfloat16)
        assert pooled.dtype == torch.bfloat16
        torch.testing.assert_close(pooled.float(), expected.float(), atol=0.02 if pooler == "roi_align" else 0.0,
                                   rtol=0.0)
        if requires_grad:
            pooled.float().sum().backward()
            assert half.grad is not None and half.grad.abs().sum() > 0


@pytest.mark.parametrize("pooler", ["roi_pool", "roi_align"])
def test_a_training_step_under_cpu_bfloat16_autocast(pooler):
    cfg = load_config(None, ["model.backbone.depth=50", "model.backbone.width=8", "model.num_classes=3",
                             f"model.roi_head.pooler={pooler}", "model.roi_head.batch_size_per_image=16"])
    model = build_faster_rcnn(cfg).train()
    images, targets = synthetic_batch(1, height=128, width=176, num_classes=3, pixel_mean=[0.485, 0.456, 0.406],
                                      pixel_std=[0.229, 0.224, 0.225], seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.roi_head.res5[0].conv1.weight.grad.abs().sum() > 0
