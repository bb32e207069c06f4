"""The detector at inference: trained models with the App. B options (refinement, multi-scale, ensembles).

Context is part of the trained model (`model.roi_head.context`); everything else is chosen at test time.
With every option off and one model, `Detector([model], InferenceOptions())(images)` equals `model.eval()(images)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import clip_boxes_to_image, nms

from detres.config import Config
from detres.data.batching import pad_images
from detres.errors import ConfigError
from detres.modeling.faster_rcnn import FasterRCNN
from detres.modeling.multiscale import RPN_SCALE_CHOICES, pyramid_factors, resize_batch, rpn_levels, select_scale_pairs
from detres.modeling.postprocess import class_candidates
from detres.modeling.voting import box_voting


@dataclass
class InferenceOptions:
    box_refine: bool = False
    box_vote: bool = True
    box_vote_iou: float = 0.5
    refine_nms_thresh: float = 0.3
    multiscale: bool = False
    pyramid_scales: tuple[int, ...] = (200, 400, 600, 800, 1000)
    max_ratio: float = 1000 / 600  # longer side cap / shorter side of training
    target_side: float = 224.0  # the pre-training crop (data.input.crop_size): the RoI size conv5_x suits best
    multiscale_rpn: bool = False  # proposals from the pyramid's levels, merged by NMS (test.multiscale_rpn)
    multiscale_rpn_scales: str = "all"  # all | adjacent (test.multiscale_rpn_scales)


def inference_options(cfg: Config) -> InferenceOptions:
    t = cfg.test
    if t.multiscale_rpn_scales not in RPN_SCALE_CHOICES:
        raise ConfigError(f"test.multiscale_rpn_scales={t.multiscale_rpn_scales!r} is not one of: "
                          f"{', '.join(RPN_SCALE_CHOICES)}")
    return InferenceOptions(multiscale_rpn=t.multiscale_rpn, multiscale_rpn_scales=t.multiscale_rpn_scales,
                            box_refine=t.box_refine, box_vote=t.box_vote, box_vote_iou=t.box_vote_iou,
                           refine_nms_thresh=t.refine_nms_thresh, multiscale=t.multiscale,
                           pyramid_scales=tuple(sorted(t.pyramid_scales)),
                           max_ratio=cfg.data.input.max_size / cfg.data.input.test_scale,
                           target_side=float(cfg.data.input.crop_size))


class _ModelView:
    """One model's state for a batch: input-scale features, and (multi-scale) one feature map per level."""

    def __init__(self, model: FasterRCNN, images: list[Tensor], options: InferenceOptions) -> None:
        self.model = model
        self.batch, self.sizes = pad_images(images, model.size_divisibility)
        self.features = model.trunk(self.batch)
        self.options = options
        self.levels: list[tuple[list[float], list[Tensor]]] = []
        if options.multiscale or options.multiscale_rpn:
            for i, size in enumerate(self.sizes):
                factors = pyramid_factors(size, list(options.pyramid_scales), options.max_ratio)
                maps = [model.trunk(resize_batch(self.batch[i:i + 1], f, model.size_divisibility)) for f in factors]
                self.levels.append((factors, maps))

    def proposals(self) -> list[Tensor]:
        if not self.options.multiscale_rpn:
            return self.model.rpn(self.features, self.sizes)[0]
        return [self._multiscale_proposals(i) for i in range(len(self.sizes))]

    def _multiscale_proposals(self, index: int) -> Tensor:
        """Multi-scale RPN testing: each chosen level's proposals (the RPN's own top-k and NMS at that level),
        mapped to the input image, merged by NMS at the RPN's threshold and cut to its post-NMS top-k."""
        rpn, (height, width) = self.model.rpn, self.sizes[index]
        factors, maps = self.levels[index]
        boxes, scores = [], []
        for level in rpn_levels(factors, self.options.multiscale_rpn_scales):
            # the input's own level is the batch's feature map (the same numbers single-scale testing uses)
            own = math.isclose(factors[level], 1.0, rel_tol=1e-6)
            factor = 1.0 if own else factors[level]
            fmap = self.features[index:index + 1] if own else maps[level]
            objectness, deltas, anchors = rpn.head_outputs(fmap)
            size = (max(1, round(height * factor)), max(1, round(width * factor)))
            (level_boxes, level_scores), = rpn.propose_scored(objectness, deltas, anchors, [size])
            boxes.append(clip_boxes_to_image(level_boxes / factor, (height, width)))
            scores.append(level_scores)
        boxes, scores = torch.cat(boxes), torch.cat(scores)
        keep = nms(boxes, scores, rpn.nms_thresh)[: rpn.post_nms_topk[1]]
        return boxes[keep]

    def roi_features(self, boxes: list[Tensor]) -> Tensor:
        """[sum K_i, D] per-RoI features: single scale, or maxout over each RoI's two pyramid levels."""
        head = self.model.roi_head
        if not self.options.multiscale:
            return head.roi_features(self.features, boxes)
        return torch.cat([self._maxout(head, i, b) for i, b in enumerate(boxes)])

    def _maxout(self, head, index: int, boxes: Tensor) -> Tensor:
        """One image's RoIs: features at their two selected levels, merged by element-wise max."""
        factors, maps = self.levels[index]
        if len(boxes) == 0:
            return head.roi_features(maps[0], [boxes])
        k1, k2 = select_scale_pairs(boxes, factors, self.options.target_side)
        merged: list[Tensor | None] = [None, None]
        for level, (factor, fmap) in enumerate(zip(factors, maps)):
            for slot, chosen in enumerate((k1, k2)):
                rows = torch.nonzero(chosen == level).squeeze(1)
                if len(rows) == 0:
                    continue
                feats = head.roi_features(fmap, [boxes[rows] * factor])
                if merged[slot] is None:
                    merged[slot] = feats.new_zeros((len(boxes), feats.shape[1]))
                merged[slot][rows] = feats
        return torch.maximum(merged[0], merged[1])

    def predict(self, boxes: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Per image (scores [K, C+1], boxes [K, C+1, 4]) for the given boxes: the model's own `forward_boxes` at
        one scale; with multi-scale testing, the maxout features with the image's context appended."""
        head = self.model.roi_head
        if not self.options.multiscale:
            return head.decode(*head.forward_boxes(self.features, boxes, self.sizes), boxes, self.sizes)
        logits, deltas = head.predict(head.add_context(self.roi_features(boxes), self.features, boxes, self.sizes))
        return head.decode(logits, deltas, boxes, self.sizes)


class Detector(nn.Module):
    """One or more trained FasterRCNN models run together with the App. B test-time options.

    Ensemble: the union of every model's proposals; every model scores and regresses every proposal; the
    scores and per-class boxes are averaged. Box refinement: each RoI's box for its top class is pooled again
    and scored again (one more batched head pass); the 2R predictions are merged, NMS'd per class, and voted.
    """

    def __init__(self, models: list[FasterRCNN], options: InferenceOptions) -> None:
        super().__init__()
        if not models:
            raise ValueError("Detector needs at least one model")
        self.models = nn.ModuleList(models)
        self.options = options

    @torch.no_grad()
    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Detections per image: dict(boxes [K, 4], scores [K], labels [K]) in input-image pixels."""
        candidates = self.candidates(images)
        if not self.options.box_refine:
            return self.models[0].roi_head.detect(candidates)  # the selection eager inference and the graph run
        return [self._merge(scores, boxes) for scores, boxes in candidates]

    @torch.no_grad()
    def candidates(self, images: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Per image (scores [K, C+1], boxes [K, C+1, 4]) before NMS; with refinement, the union of both passes."""
        views = [_ModelView(m.eval(), images, self.options) for m in self.models]
        per_model = [v.proposals() for v in views]
        proposals = [torch.cat(p) for p in zip(*per_model)]  # the union of the models' proposals, per image
        first = self._average([v.predict(proposals) for v in views])
        if not self.options.box_refine:
            return first
        refined_boxes = [top_class_boxes(scores, boxes) for scores, boxes in first]
        second = self._average([v.predict(refined_boxes) for v in views])
        return [(torch.cat([s1, s2]), torch.cat([b1, b2])) for (s1, b1), (s2, b2) in zip(first, second)]

    @staticmethod
    def _average(outputs: list[list[tuple[Tensor, Tensor]]]) -> list[tuple[Tensor, Tensor]]:
        if len(outputs) == 1:
            return outputs[0]
        return [(torch.stack([o[i][0] for o in outputs]).mean(0), torch.stack([o[i][1] for o in outputs]).mean(0))
                for i in range(len(outputs[0]))]

    def _merge(self, scores: Tensor, boxes: Tensor) -> dict[str, Tensor]:
        """The union's candidates -> per-class NMS at refine_nms_thresh -> box voting -> top detections."""
        head = self.models[0].roi_head
        flat_scores, flat_boxes, labels = class_candidates(scores, boxes, head.score_thresh)
        kept = head.class_nms(flat_boxes, flat_scores, labels, self.options.refine_nms_thresh)
        kept = kept[: head.detections_per_img]
        out_boxes = flat_boxes[kept]
        if self.options.box_vote:
            out_boxes = box_voting(out_boxes, labels[kept], flat_boxes, flat_scores, labels,
                                   iou_thresh=self.options.box_vote_iou)
        return {"boxes": out_boxes, "scores": flat_scores[kept], "labels": labels[kept]}


def top_class_boxes(scores: Tensor, boxes: Tensor) -> Tensor:
    """scores [R, C+1], boxes [R, C+1, 4] -> [R, 4]: each RoI's regressed box for its highest-scoring object class.

    One box per RoI (not one per class) keeps refinement at one extra head pass over R RoIs, as in the paper.
    """
    top = scores[:, 1:].argmax(dim=1) + 1
    return boxes[torch.arange(len(boxes), device=boxes.device), top]
