"""Do two detectors' outputs agree? Greedy matching of detections by label and IoU, then score differences."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou


def compare_detections(ours: list[dict[str, Tensor]], theirs: list[dict[str, Tensor]], *,
                       iou_thresh: float = 0.99) -> dict[str, float]:
    """Match each of our detections to the unused detection of theirs with the same label and highest IoU.

    ours, theirs: per image dict(boxes [K, 4] XYXY, scores [K], labels [K]). Returns
    `max_score_diff` over matched pairs, `min_iou` over matched pairs, `matched_frac` (matched / max(count)) and
    the detection counts. A detection whose score sits at the threshold may appear on one side only, so callers
    check `matched_frac` together with the score difference.
    """
    max_diff, min_iou, matched, total_ours, total_theirs = 0.0, 1.0, 0, 0, 0
    for a, b in zip(ours, theirs, strict=True):
        total_ours += len(a["boxes"])
        total_theirs += len(b["boxes"])
        if len(a["boxes"]) == 0 or len(b["boxes"]) == 0:
            continue
        iou = box_iou(a["boxes"].float().cpu(), b["boxes"].float().cpu())
        same_label = a["labels"].cpu()[:, None] == b["labels"].cpu()[None, :]
        iou = torch.where(same_label, iou, torch.zeros_like(iou))
        used = torch.zeros(iou.shape[1], dtype=torch.bool)
        # Highest-scoring of ours first, as NMS would: ties in IoU then go to the pair both sides rank first.
        for i in torch.argsort(a["scores"].cpu(), descending=True).tolist():
            row = iou[i].masked_fill(used, -1.0)
            j = int(row.argmax())
            if row[j] <= iou_thresh:
                continue
            used[j] = True
            matched += 1
            min_iou = min(min_iou, float(row[j]))
            max_diff = max(max_diff, abs(float(a["scores"][i]) - float(b["scores"][j])))
    denominator = max(total_ours, total_theirs)
    return {
        "max_score_diff": max_diff,
        "min_iou": min_iou if matched else 0.0,
        "matched_frac": matched / denominator if denominator else 1.0,
        "num_ours": float(total_ours),
        "num_theirs": float(total_theirs),
    }
