"""The whole trained C4 detector as one traceable function of one image, for the ONNX exporter.

The graph runs the model's own inference, `FasterRCNN.forward` in eval mode: the same trunk, RPN proposals, RoI
head, decoding and selection that eager detres runs. Only two ops are swapped, here and nowhere else, because the
exporter cannot translate the eager ones: the RoI pooling (detres.ops' fast CPU kernels -> torchvision's ops,
which export as MaxRoiPool / RoiAlign) and the per-class NMS (torchvision's batched_nms branches on the box count
-> detres.ops.batched_nms's branch-free form). tests/test_deploy_roundtrip.py checks the graph against eager.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from detres.modeling.batchnorm import fold_frozen_bn
from detres.modeling.faster_rcnn import FasterRCNN
from detres.ops.batched_nms import batched_nms_traceable


class ExportableDetector(nn.Module):
    """image [1, 3, H, W] normalized float32 -> (boxes [K, 4] XYXY input pixels, scores [K], labels [K] int64).

    Same detections as `model.eval()([image[0]])[0]`. Any H and W; an image with no detection gives K = 0.
    """

    def __init__(self, *, model: FasterRCNN) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        detections = self.model([image[0]])[0]
        return detections["boxes"], detections["scores"], detections["labels"]


def exportable_module(model: FasterRCNN) -> ExportableDetector:
    """A copy of `model` with BN folded into its convs (fewer graph nodes, same detections to ~1e-5), the two
    traceable ops swapped in, and conv5_x over all RoIs at once (chunking is a memory knob of eager inference)."""
    traced = fold_frozen_bn(copy.deepcopy(model).eval())
    for param in traced.parameters():
        param.requires_grad_(False)
    head = traced.roi_head
    head.pooling = head.pooling.traceable()
    head.class_nms = batched_nms_traceable
    head.chunk_size = 0
    return ExportableDetector(model=traced).eval()
