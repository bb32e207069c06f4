"""Pure loss functions of Faster R-CNN, each returning a dict of scalar tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rpn_losses(objectness: Tensor, labels: Tensor, pred_deltas: Tensor, target_deltas: Tensor, *,
               beta: float) -> dict[str, Tensor]:
    """RPN: binary cross-entropy over sampled anchors, smooth-L1 over positives, both / the sampled count.

    objectness: [S] logits of the sampled anchors; labels: [S] 1/0; pred/target_deltas: [P, 4] of the positives.
    """
    normalizer = max(labels.numel(), 1)
    loss_cls = F.binary_cross_entropy_with_logits(objectness, labels.to(objectness.dtype), reduction="sum")
    loss_box = F.smooth_l1_loss(pred_deltas, target_deltas, beta=beta, reduction="sum")
    return {"loss_rpn_cls": loss_cls / normalizer, "loss_rpn_box": loss_box / normalizer}


def fast_rcnn_losses(class_logits: Tensor, box_deltas: Tensor, labels: Tensor, target_deltas: Tensor, *,
                     beta: float) -> dict[str, Tensor]:
    """Fast R-CNN: softmax cross-entropy over sampled RoIs, smooth-L1 on the gt class's deltas of foreground RoIs.

    class_logits: [R, C+1]; box_deltas: [R, 4(C+1)]; labels: [R] in 0..C; target_deltas: [R, 4] (used where
    label > 0). The box loss is summed over foreground RoIs and divided by R, as in Fast R-CNN.
    """
    loss_cls = F.cross_entropy(class_logits, labels)
    fg = torch.nonzero(labels > 0).squeeze(1)
    per_class = box_deltas.reshape(box_deltas.shape[0], -1, 4)
    fg_deltas = per_class[fg, labels[fg]]
    loss_box = F.smooth_l1_loss(fg_deltas, target_deltas[fg], beta=beta, reduction="sum")
    return {"loss_cls": loss_cls, "loss_box": loss_box / max(labels.numel(), 1)}
