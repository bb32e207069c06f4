"""Region proposal network on the conv4_x map: anchor labelling (training) and proposal generation."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou, clip_boxes_to_image, nms, remove_small_boxes

from detres.boxes import BoxCoder
from detres.modeling.anchors import AnchorGenerator
from detres.modeling.losses import rpn_losses
from detres.modeling.matching import IGNORED, Matcher, sample_balanced

IGNORE_IOA = 0.5  # an anchor with more than half its area inside an ignore (crowd) region is never negative


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


def flatten_head_outputs(objectness: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
    """[B, A, H, W], [B, 4A, H, W] -> [B, H*W*A], [B, H*W*A, 4] in the anchor grid's (y, x, a) order."""
    b, a, h, w = objectness.shape
    objectness = objectness.permute(0, 2, 3, 1).reshape(b, -1)
    deltas = deltas.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
    return objectness, deltas


def ignore_region_mask(boxes: Tensor, regions: Tensor) -> Tensor:
    """[N] bool: boxes with more than IGNORE_IOA of their area inside any of `regions` [K, 4]."""
    if regions.numel() == 0:
        return torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    lt = torch.max(boxes[:, None, :2], regions[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], regions[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6).prod(dim=1)
    return (inter / area[:, None]).max(dim=1).values > IGNORE_IOA


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
        objectness, deltas = flatten_head_outputs(*self.head(features))
        anchors = self.anchor_generator.grid(features.shape[2], features.shape[3], features.device)
        proposals = self.propose(objectness.detach(), deltas.detach(), anchors, image_sizes)
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("RPN in training mode needs targets")
            losses = self.losses(objectness, deltas, anchors, image_sizes, targets)
        return proposals, losses

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
        scores, order = objectness.topk(min(pre_n, objectness.shape[1]), dim=1)
        top_deltas = torch.gather(deltas, 1, order[..., None].expand(-1, -1, 4))
        proposals = []
        for i, (height, width) in enumerate(image_sizes):
            boxes = self.box_coder.decode(top_deltas[i], anchors[order[i]])
            boxes = clip_boxes_to_image(boxes, (height, width))
            keep = remove_small_boxes(boxes, max(self.min_box_size, 1e-3))
            boxes, box_scores = boxes[keep], scores[i][keep]
            keep = nms(boxes.float(), box_scores.float(), self.nms_thresh)[:post_n]
            proposals.append((boxes[keep].float(), box_scores[keep].float()))
        return proposals

    def head_outputs(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """features [B, C, H, W] -> (objectness [B, N], deltas [B, N, 4], anchors [N, 4]) on the map's anchor grid."""
        objectness, deltas = flatten_head_outputs(*self.head(features))
        return objectness, deltas, self.anchor_generator.grid(features.shape[2], features.shape[3], features.device)

    def label_anchors(self, anchors: Tensor, image_size: tuple[int, int],
                      target: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-anchor labels (1 object, 0 background, -1 ignored) and matched gt boxes [N, 4] for one image."""
        gt, ignore = target["boxes"], target.get("ignore")
        ignore = torch.zeros(gt.shape[0], dtype=torch.bool, device=gt.device) if ignore is None else ignore
        height, width = image_size
        inside = ((anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] <= width) & (anchors[:, 3] <= height))
        iou = box_iou(gt[~ignore], anchors)
        if self.ignore_cross_boundary:
            iou[:, ~inside] = -1.0  # border-crossing anchors take part in no match, not even the best-anchor rule
        matched = self.matcher(iou)  # >= 0.7 object, < 0.3 background, each gt's best anchor(s) object
        labels = (matched >= 0).to(torch.int64)  # object if matched, background otherwise ...
        labels[matched == IGNORED] = -1  # ... unless its IoU lies between the two thresholds
        if self.ignore_cross_boundary:
            labels[~inside] = -1  # anchors crossing the image border are not used in training (Faster R-CNN)
        labels[(labels == 0) & ignore_region_mask(anchors, gt[ignore])] = -1  # crowd regions: never background
        gt_kept = gt[~ignore]
        boxes = gt_kept[matched.clamp(min=0)] if gt_kept.numel() else torch.zeros_like(anchors)
        return labels, boxes

    def losses(self, objectness: Tensor, deltas: Tensor, anchors: Tensor, image_sizes: list[tuple[int, int]],
               targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        sampled_logits, sampled_labels, pos_pred, pos_target = [], [], [], []
        for i, (size, target) in enumerate(zip(image_sizes, targets)):
            labels, gt_boxes = self.label_anchors(anchors, size, target)
            pos, neg = sample_balanced(labels, num=self.batch_size_per_image,
                                       positive_fraction=self.positive_fraction)
            chosen = torch.cat([pos, neg])
            sampled_logits.append(objectness[i, chosen])
            sampled_labels.append(labels[chosen])
            pos_pred.append(deltas[i, pos])
            pos_target.append(self.box_coder.encode(anchors[pos], gt_boxes[pos]))
        return rpn_losses(torch.cat(sampled_logits), torch.cat(sampled_labels), torch.cat(pos_pred),
                          torch.cat(pos_target), beta=self.smooth_l1_beta)
