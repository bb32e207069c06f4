"""Detect objects in every image under a folder; write drawn images and one json of all detections.

    python tools/infer.py --cfg configs/demo.yaml --ckpt runs/demo/model_final.pth --input photos/ --output preds/
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

from detres.cli import run_main
from detres.config import load_config
from detres.data.image_io import read_image_rgb
from detres.data.transforms import prepare_image
from detres.engine.distributed import resolve_device
from detres.engine.loading import load_detector
from detres.errors import DataError, UserError
from detres.vis import draw_detections

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
log = logging.getLogger("detres.infer")


def find_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def safe_output_name(relative: Path) -> str:
    """A flat file name inside the output folder for an input's relative path (no separators, no '..')."""
    name = "__".join(relative.with_suffix("").parts)
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "image"


def check_folders(input_dir: Path, output_dir: Path) -> None:
    if not input_dir.is_dir():
        raise UserError(f"--input {input_dir} is not a folder")
    src, dst = input_dir.resolve(), output_dir.resolve()
    if dst == src or src in dst.parents:
        raise UserError(f"--output {output_dir} is inside --input {input_dir}; choose a folder outside it "
                        "(detres never writes into the input folder)")


def main() -> int:
    parser = argparse.ArgumentParser(description="Run a trained detector over a folder of images.")
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--score-thr", type=float, default=0.5, help="draw and report detections above this score")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    check_folders(args.input, args.output)
    cfg = load_config(args.cfg, args.overrides)
    device = resolve_device(cfg.device)
    model, class_map, _ = load_detector(args.ckpt, cfg, optimize=True)
    model.to(device)
    images = find_images(args.input)
    if not images:
        raise UserError(f"no images ({', '.join(sorted(EXTENSIONS))}) under {args.input}")
    args.output.mkdir(parents=True, exist_ok=True)
    results, failed, tic = {}, [], time.perf_counter()
    for path in tqdm(images, desc="infer"):
        relative = path.relative_to(args.input)
        try:
            rgb = read_image_rgb(path, max_pixels=cfg.data.input.max_pixels)
        except DataError as exc:
            failed.append(str(relative))
            log.warning("skipped: %s", exc)
            continue
        tensor, factor = prepare_image(rgb, short=cfg.data.input.test_scale, max_size=cfg.data.input.max_size,
                                       pixel_mean=cfg.model.backbone.pixel_mean, pixel_std=cfg.model.backbone.pixel_std)
        with torch.no_grad():
            det = model([tensor.to(device)])[0]
        keep = det["scores"] >= args.score_thr
        boxes = (det["boxes"][keep] / factor).cpu().numpy()
        scores, labels = det["scores"][keep].cpu().numpy(), det["labels"][keep].cpu().numpy()
        drawn = draw_detections(rgb, boxes, scores, labels, class_map.names)
        cv2.imwrite(str(args.output / f"{safe_output_name(relative)}.jpg"), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        results[str(relative)] = [{"box": [round(float(v), 2) for v in b], "score": round(float(s), 4),
                                   "label": class_map.name_of(int(lab))} for b, s, lab in zip(boxes, scores, labels)]
    elapsed = time.perf_counter() - tic
    report = {"detections": results, "failed": failed, "images_per_second": len(results) / max(elapsed, 1e-9)}
    tmp = args.output / ".detections.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.output / "detections.json")
    print(f"{len(results)} images in {elapsed:.1f}s ({report['images_per_second']:.2f} images/s), "
          f"{len(failed)} unreadable skipped; results in {args.output}")
    return 0


if __name__ == "__main__":
    run_main(main)
