"""Region proposal network on the conv4_x map: the head and proposal generation (anchor labelling and the losses,
training only, are in detres.modeling.rpn_training)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import clip_boxes_to_image, nms, remove_small_boxes

from detres.boxes import BoxCoder
from detres.modeling.anchors import AnchorGenerator
from detres.modeling.matching import Matcher
from detres.modeling.rpn_training import rpn_training_losses


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then sibling 1x1 convs: objectness [B, A, H, W] and deltas [B, 4A, H, W]."""

    def __init__(self, *, in_channels: int, mid_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(mid_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(mid_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.relu(self.conv(x))
        return self.cls_logits(x), self.bbox_pred(x)


def proposals_for_image(objectness: Tensor, deltas: Tensor, anchors: Tensor, image_size: tuple[int, int], *,
                        box_coder: BoxCoder, pre_nms_topk: int, post_nms_topk: int, nms_thresh: float,
                        min_box_size: float) -> tuple[Tensor, Tensor]:
    """One image's proposals: top-N anchors by objectness, decode, clip, drop tiny boxes, NMS, keep the post-NMS
    top-N. objectness [N], deltas [N, 4], anchors [N, 4] -> (boxes [K, 4] input pixels, objectness logits [K]).

    Eager inference and the exported graph both run this: `torch.sym_min` is Python's `min` on ints and keeps a
    traced size symbolic (a Python `min` of a symbolic size would specialize the export to one image size).
    """
    scores, order = objectness.topk(torch.sym_min(pre_nms_topk, objectness.shape[0]))
    boxes = box_coder.decode(deltas[order], anchors[order])
    boxes = clip_boxes_to_image(boxes, image_size)
    keep = remove_small_boxes(boxes, max(min_box_size, 1e-3))
    boxes, scores = boxes[keep], scores[keep]
    keep = nms(boxes.float(), scores.float(), nms_thresh)[:post_nms_topk]
    return boxes[keep].float(), scores[keep].float()


def flatten_head_outputs(objectness: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
    """[B, A, H, W], [B, 4A, H, W] -> [B, H*W*A], [B, H*W*A, 4] in the anchor grid's (y, x, a) order."""
    b, a, h, w = objectness.shape
    objectness = objectness.permute(0, 2, 3, 1).reshape(b, -1)
    deltas = deltas.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
    return objectness, deltas


class RPN(nn.Module):
    """Faster R-CNN's RPN: proposals per image, and in training the anchor losses.

    pre_nms_topk / post_nms_topk: (train, test) pairs of proposal counts per image.
    """

    def __init__(self, *, head: RPNHead, anchor_generator: AnchorGenerator, matcher: Matcher, box_coder: BoxCoder,
                 batch_size_per_image: int, positive_fraction: float, pre_nms_topk: tuple[int, int],
                 post_nms_topk: tuple[int, int], nms_thresh: float, min_box_size: float,
                 ignore_cross_boundary: bool, smooth_l1_beta: float) -> None:
        super().__init__()
        self.head = head
        self.anchor_generator = anchor_generator
        self.matcher = matcher
        self.box_coder = box_coder
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pre_nms_topk = pre_nms_topk
        self.post_nms_topk = post_nms_topk
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        self.ignore_cross_boundary = ignore_cross_boundary
        self.smooth_l1_beta = smooth_l1_beta

    def forward(self, features: Tensor, image_sizes: list[tuple[int, int]],
                targets: list[dict[str, Tensor]] | None = None) -> tuple[list[Tensor], dict[str, Tensor]]:
        """features: [B, C, H, W] -> (proposals: B x [K, 4] XYXY input pixels, losses (empty at inference))."""
        objectness, deltas, anchors = self.head_outputs(features)
        proposals = self.propose(objectness.detach(), deltas.detach(), anchors, image_sizes)
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("RPN in training mode needs targets")
            losses = self.losses(objectness, deltas, anchors, image_sizes, targets)
        return proposals, losses

    def losses(self, objectness: Tensor, deltas: Tensor, anchors: Tensor, image_sizes: list[tuple[int, int]],
               targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Anchor losses (the code is in detres.modeling.rpn_training)."""
        return rpn_training_losses(self, objectness, deltas, anchors, image_sizes, targets)

    @torch.no_grad()
    def propose(self, objectness: Tensor, deltas: Tensor, anchors: Tensor,
                image_sizes: list[tuple[int, int]], topk: tuple[int, int] | None = None) -> list[Tensor]:
        """Top-N by objectness, decode, clip to each image, drop tiny boxes, NMS, keep the post-NMS top-N.

        topk: (pre-NMS, post-NMS) counts; default the pair of the current mode (train or test).
        """
        return [boxes for boxes, _ in self.propose_scored(objectness, deltas, anchors, image_sizes, topk)]

    @torch.no_grad()
    def propose_scored(self, objectness: Tensor, deltas: Tensor, anchors: Tensor, image_sizes: list[tuple[int, int]],
                       topk: tuple[int, int] | None = None) -> list[tuple[Tensor, Tensor]]:
        """As `propose`, with each proposal's objectness logit: B x (boxes [K, 4], scores [K]), best first."""
        mode = 0 if self.training else 1
        pre_n, post_n = topk if topk is not None else (self.pre_nms_topk[mode], self.post_nms_topk[mode])
        return [proposals_for_image(objectness[i], deltas[i], anchors, size, box_coder=self.box_coder,
                                    pre_nms_topk=pre_n, post_nms_topk=post_n, nms_thresh=self.nms_thresh,
                                    min_box_size=self.min_box_size) for i, size in enumerate(image_sizes)]

    def head_outputs(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """features [B, C, H, W] -> (objectness [B, N], deltas [B, N, 4], anchors [N, 4]) on the map's anchor grid."""
        objectness, deltas = flatten_head_outputs(*self.head(features))
        return objectness, deltas, self.anchor_generator.grid(features.shape[2], features.shape[3], features.device)
