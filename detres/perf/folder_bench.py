"""Images/s of folder inference (detres.engine.folder_inference) for several reader-worker counts, same model.

Each count runs over the same images (links to the first `limit` files of the folder) into a fresh temporary
output folder, after one untimed warm-up pass, so the rows differ only in how many processes decode images.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from detres.config import Config
from detres.data.records import ClassMap
from detres.engine.folder_inference import Predictor, infer_folder
from detres.errors import UserError
from detres.io.folders import find_images

WARMUP_IMAGES = 8


def _linked_folder(images: list[Path], input_dir: Path, root: Path) -> Path:
    """A folder of symlinks to `images`, keeping their relative paths (so names and order stay the same)."""
    for path in images:
        link = root / path.relative_to(input_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path.resolve())
    return root


def bench_folder_workers(predictor: Predictor, class_map: ClassMap, cfg: Config, device: torch.device, *,
                         input_dir: Path, workers: list[int], limit: int, draw: bool,
                         score_thr: float) -> list[dict]:
    """One row per worker count: {"workers", "images", "seconds", "images_per_second"}."""
    images = find_images(input_dir)[:limit] if limit > 0 else find_images(input_dir)
    if not images:
        raise UserError(f"no images under {input_dir}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="detres-bench-infer-") as tmp:
        root = Path(tmp)
        folder = _linked_folder(images, input_dir, root / "in")
        warmup = _linked_folder(images[:WARMUP_IMAGES], input_dir, root / "warmup")
        infer_folder(predictor, class_map, cfg, device, warmup, root / "out_warmup", score_thr, workers=0,
                     draw=draw)
        for count in workers:
            report = infer_folder(predictor, class_map, cfg, device, folder, root / f"out_w{count}", score_thr,
                                  workers=count, draw=draw)
            rows.append({"workers": count, "images": len(report["detections"]), "seconds": report["seconds"],
                         "images_per_second": round(report["images_per_second"], 2)})
    return rows
