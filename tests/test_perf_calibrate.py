"""calibrate_for_benchmark: BN statistics from each layer's own input, classifier logits at the asked spread."""

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detres.perf.calibrate import calibrate_for_benchmark


class _TinyDetectorLike(nn.Module):
    """Two conv + frozen-BN stages and a classifier: what calibration touches in a detector."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), FrozenBatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), FrozenBatchNorm2d(8))
        self.classifier = nn.Linear(8, 5)

    def forward(self, images):
        x = self.body(torch.stack(images))
        return self.classifier(x.mean(dim=(2, 3)))


def test_every_frozen_bn_normalizes_its_own_input():
    model = _TinyDetectorLike()
    images = [torch.randn(3, 16, 16) * 5 + 2 for _ in range(4)]
    calibrate_for_benchmark(model, images, output_std=[(model.classifier, 3.0)])
    with torch.no_grad():
        first = model.body[:2](torch.stack(images))
        second = model.body(torch.stack(images))
        logits = model(images)
    for out in (first, second):
        assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(8), atol=1e-4)
        assert torch.allclose(out.var(dim=(0, 2, 3), unbiased=False), torch.ones(8), atol=1e-2)
    assert abs(float((logits - model.classifier.bias.detach()).std()) - 3.0) < 1e-3
