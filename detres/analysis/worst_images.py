"""The images that lose the most at the operating point, drawn as ground truth beside predictions, each box
coloured by what happened to it (OpenCV drawing)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO

from detres.analysis.tide import Attribution
from detres.data.image_io import read_image_rgb

# RGB colours of detection types and ground-truth outcomes; the page's legend uses the same table
DET_COLOURS = {"tp": (40, 170, 40), "cls": (230, 25, 75), "loc": (245, 130, 48), "both": (145, 30, 180),
               "dupe": (190, 170, 0), "bkg": (240, 50, 230), "ignored": (150, 150, 150)}
GT_COLOURS = {"matched": (40, 170, 40), "missed": (0, 110, 220), "covered": (0, 190, 190), "ignored": (150, 150, 150)}


def image_losses(gt: COCO, results: list[dict], a: Attribution, score_thresh: float) -> dict[int, dict[str, int]]:
    """{image id: {fp, fn, loss}} counting detections scoring >= score_thresh: false positives of any type and
    objects not found by such a detection; loss = fp + fn."""
    out = {i: {"fp": 0, "fn": 0, "loss": 0} for i in gt.getImgIds()}
    for g, kind in a.gt_type.items():
        if kind != "ignored":
            out[gt.anns[g]["image_id"]]["fn"] += 1
    for index, kind in a.det_type.items():
        r = results[index]
        if r["score"] < score_thresh or kind == "ignored":
            continue
        out[r["image_id"]]["fn" if kind == "tp" else "fp"] += -1 if kind == "tp" else 1
    for v in out.values():
        v["loss"] = v["fp"] + v["fn"]
    return out


def _draw(rgb: np.ndarray, boxes: list[tuple[list[float], tuple[int, int, int], str]], scale: float) -> np.ndarray:
    out = np.ascontiguousarray(cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR))
    for (x, y, w, h), colour, text in boxes:
        p1 = (int(round(x * scale)), int(round(y * scale)))
        p2 = (int(round((x + w) * scale)), int(round((y + h) * scale)))
        cv2.rectangle(out, p1, p2, colour, 2)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        top = max(0, p1[1] - th - 4)
        cv2.rectangle(out, (p1[0], top), (p1[0] + tw + 4, top + th + 4), colour, -1)
        cv2.putText(out, text, (p1[0] + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


def draw_pair(image_path: str, image_id: int, gt: COCO, results: list[dict], a: Attribution,
              score_thresh: float, names: dict[int, str], *, min_side: int = 320) -> np.ndarray:
    """[H, 2W + 8, 3] uint8 RGB: ground truth (left) and the detections scoring >= score_thresh (right)."""
    rgb = read_image_rgb(image_path)
    scale = max(1.0, min_side / min(rgb.shape[:2]))
    gt_boxes = [(g["bbox"], GT_COLOURS[a.gt_type.get(g["id"], "ignored")],
                 f"{names[g['category_id']]} {a.gt_type.get(g['id'], 'ignored')}")
                for g in gt.imgToAnns.get(image_id, [])]
    det_boxes = [(results[i]["bbox"], DET_COLOURS[kind], f"{names[results[i]['category_id']]} "
                  f"{results[i]['score']:.2f} {kind}")
                 for i, kind in sorted(a.det_type.items(), key=lambda t: results[t[0]]["score"])
                 if results[i]["image_id"] == image_id and results[i]["score"] >= score_thresh]
    left, right = _draw(rgb, gt_boxes, scale), _draw(rgb, det_boxes, scale)
    gap = np.full((left.shape[0], 8, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def write_pair(path: Path, pair: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(pair, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
