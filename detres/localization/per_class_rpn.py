"""Per-class RPN (App. C): a 3x3 conv on a classification net's feature map, then sibling 1x1 layers `cls`
(C binary logistic outputs per anchor) and `reg` (C x 4 box deltas per anchor).

Training labels (one line each in `per_class_targets`): anchors are matched to the image's ground-truth boxes
as in Faster R-CNN; 8 anchors per image are sampled at 1:1; only the ground-truth class's column of `cls` and
`reg` gets a loss. The other classes' logits get neither positive nor negative targets: the class comes from
the classification network, so class c's outputs only have to say where an object of class c is *given*
that the image shows class c; training them as negatives on other classes' images would spend the 8 sampled
anchors on a classification job and push down the scores of look-alike classes, which is exactly where the
top-5 guesses need a box.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detres.boxes import BoxCoder
from detres.modeling.anchors import AnchorGenerator
from detres.modeling.matching import Matcher, sample_balanced


class PerClassRPN(nn.Module):
    """body: images [B, 3, H, W] -> features [B, in_channels, H/stride, W/stride] (a ResNet trunk).

    forward(images) -> (logits [B, HWA, C], deltas [B, HWA, C, 4], (H', W') the feature map size); the anchor
    order is the anchor grid's (row-major over y, x, then anchor), as `AnchorGenerator.grid(H', W')` gives it.
    """

    def __init__(self, *, body: nn.Module, in_channels: int, head_channels: int, num_classes: int,
                 num_anchors: int) -> None:
        super().__init__()
        self.body = body
        self.num_classes, self.num_anchors = num_classes, num_anchors
        self.conv = nn.Conv2d(in_channels, head_channels, 3, padding=1)
        # channel a*C + c of cls is anchor a, class c; reg adds the 4 deltas innermost.
        self.cls = nn.Conv2d(head_channels, num_anchors * num_classes, 1)
        self.reg = nn.Conv2d(head_channels, num_anchors * num_classes * 4, 1)
        for layer in (self.conv, self.cls, self.reg):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        x = F.relu(self.conv(self.body(images)))
        b, _, h, w = x.shape
        a, c = self.num_anchors, self.num_classes
        logits = self.cls(x).view(b, a, c, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, c)
        deltas = self.reg(x).view(b, a, c, 4, h, w).permute(0, 4, 5, 1, 2, 3).reshape(b, h * w * a, c, 4)
        return logits, deltas, (h, w)


def anchor_labels(anchors: Tensor, gt_boxes: Tensor, matcher: Matcher) -> tuple[Tensor, Tensor]:
    """anchors: [N, 4], gt_boxes: [G, 4] (the image's class only) -> (labels [N]: 1 pos, 0 neg, -1 ignored,
    matched gt box per anchor [N, 4]). With no gt box in the crop every anchor is negative."""
    if len(gt_boxes) == 0:
        return torch.zeros(len(anchors), dtype=torch.int64, device=anchors.device), torch.zeros_like(anchors)
    from torchvision.ops import box_iou
    matches = matcher(box_iou(gt_boxes, anchors))
    labels = torch.full_like(matches, -1)
    labels[matches >= 0] = 1  # IoU >= high (or the best anchor of a gt box): "is an object of the gt class"
    labels[matches == -1] = 0  # IoU < low with every gt box: "is not"
    return labels, gt_boxes[matches.clamp(min=0)]


def per_class_targets(pos_idx: Tensor, neg_idx: Tensor, gt_class: int, num_anchors: int,
                      num_classes: int) -> tuple[Tensor, Tensor]:
    """The binary targets and loss weights [N, C] of one image for its sampled anchors.

    gt_class: 0-based class index (label - 1). Only column gt_class is weighted: 1 for positives, 0 for
    negatives; every other class's column has weight 0 (no loss, see the module docstring).
    """
    target = torch.zeros(num_anchors, num_classes, device=pos_idx.device)
    weight = torch.zeros(num_anchors, num_classes, device=pos_idx.device)
    target[pos_idx, gt_class] = 1.0
    weight[torch.cat([pos_idx, neg_idx]), gt_class] = 1.0
    return target, weight


def per_class_rpn_loss(logits: Tensor, deltas: Tensor, anchors: Tensor, gt_boxes: list[Tensor], labels: Tensor, *,
                       matcher: Matcher, coder: BoxCoder, anchors_per_image: int, positive_fraction: float,
                       smooth_l1_beta: float, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Losses of a batch of crops. logits [B, N, C], deltas [B, N, C, 4], anchors [N, 4] (the same crop size
    for every image), gt_boxes: B x [G_i, 4], labels [B] contiguous 1..C.

    Binary cross-entropy on the sampled anchors of the gt class, smooth L1 on its deltas of the positives;
    both normalized by the number of sampled anchors in the batch (as the RPN of Faster R-CNN).
    """
    b, n, c = logits.shape
    cls_sum = logits.new_zeros(())
    reg_sum = logits.new_zeros(())
    sampled = 0
    for i in range(b):
        lab, matched = anchor_labels(anchors, gt_boxes[i].to(anchors), matcher)
        pos, neg = sample_balanced(lab, num=anchors_per_image, positive_fraction=positive_fraction,
                                   generator=generator)
        k = int(labels[i]) - 1
        target, weight = per_class_targets(pos, neg, k, n, c)
        cls_sum = cls_sum + F.binary_cross_entropy_with_logits(logits[i], target, weight=weight, reduction="sum")
        if len(pos):
            reg_target = coder.encode(anchors[pos], matched[pos])
            reg_sum = reg_sum + F.smooth_l1_loss(deltas[i, pos, k], reg_target, beta=smooth_l1_beta,
                                                 reduction="sum")
        sampled += len(pos) + len(neg)
    norm = max(sampled, 1)
    return {"loss_rpn_cls": cls_sum / norm, "loss_rpn_box": reg_sum / norm}




class LocRPNPredictor:
    """Turns the per-class RPN's outputs on one image into boxes and scores for chosen classes.

    Keeps the anchor generator and box coder together so training and testing decode the same way.
    """

    def __init__(self, *, model: PerClassRPN, anchor_generator: AnchorGenerator, coder: BoxCoder) -> None:
        self.model, self.anchor_generator, self.coder = model, anchor_generator, coder

    @torch.no_grad()
    def boxes_for_classes(self, image: Tensor, labels: list[int]) -> dict[int, tuple[Tensor, Tensor]]:
        """image: [3, H, W] normalized -> {label: (boxes [HWA, 4] XYXY clipped to the input, scores [HWA])}
        for each contiguous label in `labels`; scores are the class's logistic probabilities."""
        logits, deltas, (fh, fw) = self.model(image[None])
        h, w = image.shape[-2:]
        anchors = self.anchor_generator.grid(fh, fw, image.device)
        out = {}
        for label in labels:
            k = label - 1
            boxes = self.coder.decode(deltas[0, :, k], anchors)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            out[label] = (boxes, torch.sigmoid(logits[0, :, k]))
        return out
