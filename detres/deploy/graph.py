"""The whole trained C4 detector as one traceable function of one image, for ONNX and torch.export.

Eager detres pads a list of images, loops over them in Python and takes `min(k, n)` of Python ints; a traced
graph needs a single tensor input and symbolic sizes instead. `ExportableDetector` runs the model's own modules
(trunk, RPN head, anchor grid, box coder, conv5_x, predictor) and the same post-processing functions, with only
those export-unfriendly steps rewritten (`propose`, `pool`, `head`); tests/test_deploy_graph.py checks each
against its eager counterpart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import clip_boxes_to_image, nms, remove_small_boxes, roi_align, roi_pool

from detres.modeling.faster_rcnn import FasterRCNN
from detres.modeling.postprocess import decode_predictions
from detres.modeling.rpn import flatten_head_outputs
from detres.ops.batched_nms import batched_nms_traceable


class ExportableDetector(nn.Module):
    """image [1, 3, H, W] normalized float32 -> (boxes [K, 4] XYXY input pixels, scores [K], labels [K] int64).

    Same detections as `model.eval()([image[0]])[0]`. Any H and W; an image with no detection gives K = 0.
    """

    def __init__(self, *, model: FasterRCNN) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        height, width = image.shape[-2], image.shape[-1]
        div = max(self.model.size_divisibility, 1)
        # pad_images' zero padding at the bottom/right, with symbolic sizes
        batch = F.pad(image, (0, (div - width % div) % div, 0, (div - height % div) % div))
        features = self.model.trunk(batch)
        proposals = propose(self.model.rpn, features, (height, width))
        logits, deltas = head(self.model.roi_head, features, proposals, (height, width))
        scores, boxes = decode_predictions(logits, deltas, proposals, self.model.roi_head.box_coder, (height, width))
        return select(self.model.roi_head, scores, boxes)


def propose(rpn, features: Tensor, image_size: tuple) -> Tensor:
    """RPN.propose for one image ([1, C, h, w] features) -> proposals [P, 4]; `torch.sym_min` where eager takes
    Python's min of ints (a symbolic size would become a guard, and the export would specialize)."""
    objectness, deltas = flatten_head_outputs(*rpn.head(features))
    anchors = rpn.anchor_generator.grid(features.shape[2], features.shape[3], features.device)
    pre_n, post_n = rpn.pre_nms_topk[1], rpn.post_nms_topk[1]
    scores, order = objectness[0].topk(torch.sym_min(pre_n, objectness.shape[1]))
    boxes = rpn.box_coder.decode(deltas[0][order], anchors[order])
    boxes = clip_boxes_to_image(boxes, image_size)
    keep = remove_small_boxes(boxes, max(rpn.min_box_size, 1e-3))
    boxes, scores = boxes[keep], scores[keep]
    keep = nms(boxes, scores, rpn.nms_thresh)[:post_n]
    return boxes[keep]


def pool(roi_head, features: Tensor, boxes: Tensor) -> Tensor:
    """C4RoIHead.pool for one image's boxes [R, 4] -> [R, C, r, r], through torchvision's ops (which export as
    ONNX MaxRoiPool / RoiAlign with half_pixel alignment); the eager head's fast CPU kernels equal them."""
    rois = torch.cat([boxes.new_zeros((boxes.shape[0], 1)), boxes], dim=1)
    size = (roi_head.resolution, roi_head.resolution)
    if roi_head.pooler == "roi_pool":
        return roi_pool(features, rois, size, roi_head.spatial_scale)
    return roi_align(features, rois, size, roi_head.spatial_scale, roi_head.sampling_ratio, aligned=True)


def head(roi_head, features: Tensor, proposals: Tensor, image_size: tuple) -> tuple[Tensor, Tensor]:
    """C4RoIHead.forward_boxes for one image: pool, conv5_x, average pool, (global context), predictor."""
    if not roi_head.context:
        return roi_head.predict(roi_head.res5(pool(roi_head, features, proposals)).mean(dim=(2, 3)))
    height, width = image_size
    whole = torch.stack([features.new_zeros(()), features.new_zeros(()),
                         torch.full((), width, dtype=features.dtype), torch.full((), height, dtype=features.dtype)])
    joint = roi_head.res5(pool(roi_head, features, torch.cat([proposals, whole[None]]))).mean(dim=(2, 3))
    roi_feats, context = joint[:-1], joint[-1:]
    return roi_head.predict(torch.cat([roi_feats, context.expand(roi_feats.shape[0], -1)], dim=1))


def select(roi_head, scores: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """postprocess.select_detections (scores [R, C+1], boxes [R, C+1, 4] -> boxes, scores, labels) with the
    traceable per-class NMS."""
    labels = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    scores, boxes, labels = scores[:, 1:].reshape(-1), boxes[:, 1:].reshape(-1, 4), labels[:, 1:].reshape(-1)
    keep = torch.nonzero(scores > roi_head.score_thresh).squeeze(1)
    scores, boxes, labels = scores[keep], boxes[keep], labels[keep]
    keep = remove_small_boxes(boxes, 1e-2)
    scores, boxes, labels = scores[keep], boxes[keep], labels[keep]
    keep = batched_nms_traceable(boxes, scores, labels, roi_head.nms_thresh)[: roi_head.detections_per_img]
    return boxes[keep], scores[keep], labels[keep]
