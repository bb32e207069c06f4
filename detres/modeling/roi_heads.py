"""The C4 detection head: RoI pooling on conv4_x, conv5_x + global average pooling, sibling predictors.

Training-only code (proposal labelling, sampling, losses) is in `label_and_sample` and `losses`; inference
decoding lives in detres.modeling.postprocess. The pieces (`pool`, `head_features`, `predict`) are separately
callable so that box refinement, context and multi-scale testing (App. B) reuse them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou, roi_align

from detres.boxes import BoxCoder
from detres.modeling.losses import fast_rcnn_losses
from detres.modeling.matching import IGNORED, Matcher, sample_balanced
from detres.modeling.postprocess import decode_predictions, select_detections
from detres.modeling.rpn import ignore_region_mask
from detres.ops.roi_align_matrix import roi_align_matrix
from detres.ops.roi_max_pool import roi_max_pool


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
        if pooler not in ("roi_pool", "roi_align"):
            raise ValueError(f"pooler must be roi_pool or roi_align, got {pooler!r}")
        self.res5 = res5
        self.predictor = predictor
        self.box_coder = box_coder
        self.matcher = matcher
        self.pooler = pooler
        self.resolution = resolution
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
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
        # Boxes never in bfloat16/float16 (under autocast the features are): near 600 px bfloat16 steps by 4 px.
        reduced = features.dtype in (torch.bfloat16, torch.float16)
        boxes = [b.float() if reduced else b.to(features.dtype) for b in boxes]
        if self.pooler == "roi_pool":
            # Bit-identical to torchvision's roi_pool; ~4x faster on CPU at inference (falls back to it for autograd).
            return roi_max_pool(features, boxes, self.resolution, self.spatial_scale)
        if features.requires_grad and features.device.type == "cpu":
            # Same numbers as torchvision's roi_align, whose CPU backward is a single-threaded loop (see detres.ops)
            return roi_align_matrix(features, boxes, self.resolution, self.spatial_scale, self.sampling_ratio)
        # torchvision's roi_align wants rois in the features' dtype: reduced-precision features pool in float32
        pooled = roi_align(features.float() if reduced else features, boxes, self.resolution, self.spatial_scale,
                           self.sampling_ratio, aligned=True)
        return pooled.to(features.dtype)

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
        """Per image one box [1, 4] covering the whole (unpadded) image."""
        return [features.new_tensor([[0.0, 0.0, float(w), float(h)]]) for h, w in image_sizes]

    def add_context(self, roi_feats: Tensor, features: Tensor, boxes: list[Tensor],
                    image_sizes: list[tuple[int, int]]) -> Tensor:
        """[R, D] -> [R, 2D] with each RoI's image context appended (unchanged when context is off)."""
        if not self.context:
            return roi_feats
        counts = torch.tensor([len(b) for b in boxes], device=roi_feats.device)
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
        counts = [len(b) for b in boxes]
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
        counts = [len(p) for p in proposals]
        pieces = zip(class_logits.split(counts), box_deltas.split(counts), proposals, image_sizes)
        return [decode_predictions(logits, deltas, props, self.box_coder, size)
                for logits, deltas, props, size in pieces]

    def detect(self, per_image: list[tuple[Tensor, Tensor]]) -> list[dict[str, Tensor]]:
        return [select_detections(scores, boxes, score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                                  detections_per_img=self.detections_per_img) for scores, boxes in per_image]

    # --- training ------------------------------------------------------------------------------------
    @torch.no_grad()
    def label_and_sample(self, proposals: Tensor, target: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """One image -> (sampled RoIs [S, 4], labels [S] in 0..C, regression targets [S, 4])."""
        gt, labels_gt = target["boxes"], target["labels"]
        ignore = target.get("ignore")
        ignore = torch.zeros(gt.shape[0], dtype=torch.bool, device=gt.device) if ignore is None else ignore
        gt_kept, labels_kept = gt[~ignore], labels_gt[~ignore]
        proposals = torch.cat([proposals, gt_kept])  # ground-truth boxes join the proposals in training
        iou = box_iou(gt_kept, proposals)
        matched = self.matcher(iou)  # IoU >= 0.5 foreground, < 0.5 background
        max_iou = iou.max(dim=0).values if gt_kept.numel() else torch.zeros(len(proposals), device=gt.device)
        labels = (matched >= 0).to(torch.int64)
        labels[matched == IGNORED] = -1  # between the background and foreground thresholds, when they differ
        labels[max_iou < self.bg_iou_thresh_lo] = -1  # background only in [lo, 0.5) (Fast R-CNN: lo = 0.1 option)
        labels[(labels == 0) & ignore_region_mask(proposals, gt[ignore])] = -1  # inside crowd regions: unused
        pos, neg = sample_balanced(labels, num=self.batch_size_per_image, positive_fraction=self.positive_fraction)
        chosen = torch.cat([pos, neg])
        rois = proposals[chosen]
        cls = torch.zeros(len(chosen), dtype=torch.int64, device=gt.device)
        targets = torch.zeros(len(chosen), 4, dtype=rois.dtype, device=gt.device)
        if len(pos):
            matched_gt = matched[pos]
            cls[: len(pos)] = labels_kept[matched_gt]
            targets[: len(pos)] = self.box_coder.encode(rois[: len(pos)], gt_kept[matched_gt])
        return rois, cls, targets

    def losses(self, features: Tensor, proposals: list[Tensor], targets: list[dict[str, Tensor]],
               image_sizes: list[tuple[int, int]]) -> dict[str, Tensor]:
        sampled = [self.label_and_sample(p, t) for p, t in zip(proposals, targets)]
        rois = [s[0] for s in sampled]
        class_logits, box_deltas = self.forward_boxes(features, rois, image_sizes)
        labels = torch.cat([s[1] for s in sampled])
        reg_targets = torch.cat([s[2] for s in sampled])
        return fast_rcnn_losses(class_logits, box_deltas, labels, reg_targets, beta=self.smooth_l1_beta)
