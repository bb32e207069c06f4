"""Running a detector over a loader and mapping its boxes back to the original images."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from detres import distributed as dist
from detres.cli.progress import progress as progress_bar
from detres.data.transforms import to_original


@torch.no_grad()
def run_inference(model: nn.Module, loader, *, device: torch.device, progress: bool = True,
                  autocast_dtype: torch.dtype | None = None) -> dict[int, dict[str, np.ndarray]]:
    """{image_id: dict(boxes [K,4] original-image XYXY, scores [K], labels [K])}; gathered on every process."""
    model.eval()
    results: dict[int, dict[str, np.ndarray]] = {}
    for images, _, metas in progress_bar(loader, desc="inference", enabled=progress and dist.is_main_process(),
                                         leave=False):
        images = [im.to(device) for im in images]
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs = model(images)
        for det, meta in zip(outputs, metas):
            results[meta["image_id"]] = to_original(det, meta)
    if dist.world_size() > 1:
        gathered: list = [None] * dist.world_size()
        torch.distributed.all_gather_object(gathered, results)
        results = {k: v for part in gathered for k, v in part.items()}
    return results
