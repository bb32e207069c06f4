"""One batch of Jobs through the detector, with `detres infer`'s own functions (detect_batch, detect_tiled,
detections_as_json), so the server's detections are infer's by construction.

Images are grouped by their padded input size (data.input.size_divisibility): images of one size pad alike, so
a batch of them gives each image the detections it gets alone. `serve.pad_batch=true` pads every image of a
batch into one forward, as training does: faster on mixed sizes, but the padding changes the features near the
right and bottom borders, so detections there may differ slightly from `detres infer`'s (docs/serving.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from detres.config import Config
from detres.data.records import ClassMap
from detres.engine.folder_inference import Predictor, detect_batch, detect_tiled, detections_as_json
from detres.serve.decoding import Job


class BatchDetector:
    """`runner(jobs) -> [(detections as detres infer writes them, images in that image's forward)]`;
    `on_forward(n)` is told the size of every forward (the batch-size histogram)."""

    def __init__(self, predictor: Predictor, class_map: ClassMap, cfg: Config, device: torch.device, *,
                 on_forward: Callable[[int], None] = lambda n: None) -> None:
        self.predictor, self.class_map, self.cfg, self.device = predictor, class_map, cfg, device
        self.on_forward = on_forward

    def _groups(self, jobs: list[Job]) -> list[list[int]]:
        if self.cfg.serve.pad_batch:
            return [list(range(len(jobs)))]
        div = max(self.cfg.data.input.size_divisibility, 1)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, job in enumerate(jobs):
            key = (math.ceil(job.tensor.shape[1] / div), math.ceil(job.tensor.shape[2] / div))
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def __call__(self, jobs: list[Job]) -> list[tuple[list[dict], int]]:
        results: list[tuple[list[dict], int] | None] = [None] * len(jobs)
        if self.cfg.test.tile_size > 0:  # tiled: each image is its own batch of tiles
            for i, job in enumerate(jobs):
                found = detect_tiled(self.predictor, job.rgb, self.cfg, device=self.device, score_thr=job.score_thr)
                self.on_forward(1)
                results[i] = (detections_as_json(*found, self.class_map), 1)
            return results  # type: ignore[return-value]
        for group in self._groups(jobs):
            members = [jobs[i] for i in group]
            found = detect_batch(self.predictor, [job.tensor for job in members], [job.orig_size for job in members],
                                 device=self.device, precision=self.cfg.test.precision,
                                 score_thrs=[job.score_thr for job in members])
            self.on_forward(len(group))
            for i, (boxes, scores, labels) in zip(group, found):
                results[i] = (detections_as_json(boxes, scores, labels, self.class_map), len(group))
        return results  # type: ignore[return-value]
