"""The C4 detection head: RoI pooling on conv4_x, conv5_x + global average pooling, sibling predictors.

This file is what runs at test time; training-only code (proposal labelling, sampling, losses) is in
detres.modeling.roi_head_training, decoding and selection in detres.modeling.postprocess. The pieces (`pool`,
`head_features`, `predict`) are separately callable so that box refinement, context and multi-scale testing (App. B)
reuse them. The two ops an exported graph runs differently, the RoI pooling and the per-class NMS, are attributes
(`pooling`, `class_nms`) that detres.deploy.graph swaps; nothing else is written twice.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detres.boxes import BoxCoder
from detres.modeling.matching import Matcher
from detres.modeling.postprocess import decode_predictions, select_detections
from detres.modeling.roi_head_training import roi_head_training_losses
from detres.modeling.roi_pooling import RoIPooling


class BoxPredictor(nn.Module):
    """Sibling layers: (C+1)-way classification and class-specific regression, 4 deltas for each of C+1 classes

    (background's are unused, as in Fast R-CNN; the layout also matches torchvision's FastRCNNPredictor).
    """

    def __init__(self, *, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class C4RoIHead(nn.Module):
    """RoIs -> pooled conv4_x features -> conv5_x -> average pool -> class scores and per-class boxes."""

    def __init__(self, *, res5: nn.Module, predictor: BoxPredictor, box_coder: BoxCoder, matcher: Matcher,
                 pooler: str, resolution: int, spatial_scale: float, sampling_ratio: int,
                 batch_size_per_image: int, positive_fraction: float, bg_iou_thresh_lo: float, smooth_l1_beta: float,
                 score_thresh: float, nms_thresh: float, detections_per_img: int, chunk_size: int,
                 context: bool = False) -> None:
        super().__init__()
        self.res5 = res5
        self.predictor = predictor
        self.box_coder = box_coder
        self.matcher = matcher
        self.pooling = RoIPooling(pooler, resolution, spatial_scale, sampling_ratio)
        self.class_nms = batched_nms  # per-class NMS: (boxes, scores, labels, iou) -> kept indices, best first
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.bg_iou_thresh_lo = bg_iou_thresh_lo
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.chunk_size = chunk_size
        self.context = context

    # --- shared pieces --------------------------------------------------------------------------------
    def pool(self, features: Tensor, boxes: list[Tensor]) -> Tensor:
        """features [B, C, H, W], B x [K_i, 4] input-pixel boxes -> [sum K_i, C, r, r]."""
        return self.pooling(features, boxes)

    def head_features(self, pooled: Tensor) -> Tensor:
        """[R, C, r, r] -> [R, D]: conv5_x (stride 2) then global average pooling, in chunks at inference."""
        if self.training or self.chunk_size <= 0 or pooled.shape[0] <= self.chunk_size:
            return self.res5(pooled).mean(dim=(2, 3))
        return torch.cat([self.res5(c).mean(dim=(2, 3)) for c in pooled.split(self.chunk_size)])

    def roi_features(self, features: Tensor, boxes: list[Tensor]) -> Tensor:
        """B x [K_i, 4] boxes -> [sum K_i, D] per-RoI features (pool, conv5_x, average pool)."""
        return self.head_features(self.pool(features, boxes))

    def context_features(self, features: Tensor, image_sizes: list[tuple[int, int]]) -> Tensor:
        """App. B global context: the whole image's box through the same pooling and conv5_x -> [B, D].

        One RoI per image (single-level spatial pyramid pooling over the full image), computed once per image.
        """
        return self.roi_features(features, self.whole_image_boxes(features, image_sizes))

    @staticmethod
    def whole_image_boxes(features: Tensor, image_sizes: list[tuple[int, int]]) -> list[Tensor]:
        """Per image one box [1, 4] covering the whole (unpadded) image (built from tensors, so that a traced
        image size stays symbolic)."""
        zero = features.new_zeros((), dtype=torch.float32)
        return [torch.stack([zero, zero, torch.full((), w, dtype=torch.float32, device=features.device),
                             torch.full((), h, dtype=torch.float32, device=features.device)])[None]
                for h, w in image_sizes]

    def add_context(self, roi_feats: Tensor, features: Tensor, boxes: list[Tensor],
                    image_sizes: list[tuple[int, int]]) -> Tensor:
        """[R, D] -> [R, 2D] with each RoI's image context appended (unchanged when context is off)."""
        if not self.context:
            return roi_feats
        counts = torch.tensor([b.shape[0] for b in boxes], device=roi_feats.device)
        context = self.context_features(features, image_sizes).repeat_interleave(counts, dim=0)
        return torch.cat([roi_feats, context], dim=1)

    def predict(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """[R, D] (or [R, 2D] with context) -> (class_logits [R, C+1], box_deltas [R, 4(C+1)])."""
        return self.predictor(feats)

    def forward_boxes(self, features: Tensor, boxes: list[Tensor],
                      image_sizes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        """pool -> conv5_x -> (context) -> predict for all RoIs of the batch in one call.

        With context, each image's whole-image box joins its RoIs in the same conv5_x pass: one batched pass, and
        a conv5_x with trained BN normalizes RoIs and context boxes together rather than updating its running
        statistics with a separate batch of a few whole-image boxes (which at test time would mis-normalize RoIs).
        """
        if not self.context:
            return self.predict(self.roi_features(features, boxes))
        whole = self.whole_image_boxes(features, image_sizes)
        joint = self.roi_features(features, [torch.cat([b.to(w.dtype), w]) for b, w in zip(boxes, whole)])
        counts = [b.shape[0] for b in boxes]
        roi_feats, context = [], []
        for part, count in zip(joint.split([c + 1 for c in counts]), counts):
            roi_feats.append(part[:count])
            context.append(part[count:].expand(count, -1))  # the image's context row, once per RoI
        return self.predict(torch.cat([torch.cat(roi_feats), torch.cat(context)], dim=1))

    # --- inference -----------------------------------------------------------------------------------
    def predict_boxes(self, features: Tensor, proposals: list[Tensor],
                      image_sizes: list[tuple[int, int]]) -> list[tuple[Tensor, Tensor]]:
        """Per image: (scores [K, C+1], boxes [K, C+1, 4]) for every proposal, before NMS."""
        class_logits, box_deltas = self.forward_boxes(features, proposals, image_sizes)
        return self.decode(class_logits, box_deltas, proposals, image_sizes)

    def decode(self, class_logits: Tensor, box_deltas: Tensor, proposals: list[Tensor],
               image_sizes: list[tuple[int, int]]) -> list[tuple[Tensor, Tensor]]:
        """Batched head outputs -> per image (scores [K, C+1], boxes [K, C+1, 4])."""
        counts = [p.shape[0] for p in proposals]
        pieces = zip(class_logits.split(counts), box_deltas.split(counts), proposals, image_sizes)
        return [decode_predictions(logits, deltas, props, self.box_coder, size)
                for logits, deltas, props, size in pieces]

    def detect(self, per_image: list[tuple[Tensor, Tensor]]) -> list[dict[str, Tensor]]:
        """Per image (scores [K, C+1], boxes [K, C+1, 4]) -> the final detections (test.score_thresh, nms_thresh,
        detections_per_img)."""
        return [select_detections(scores, boxes, score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                                  detections_per_img=self.detections_per_img, class_nms=self.class_nms)
                for scores, boxes in per_image]

    # --- training (the code is in detres.modeling.roi_head_training) ---------------------------------
    def losses(self, features: Tensor, proposals: list[Tensor], targets: list[dict[str, Tensor]],
               image_sizes: list[tuple[int, int]]) -> dict[str, Tensor]:
        """Fast R-CNN losses on each image's sampled RoIs."""
        return roi_head_training_losses(self, features, proposals, targets, image_sizes)
