"""Detect objects in every image under a folder; write drawn images and one json of all detections.

    python tools/infer.py --cfg configs/demo.yaml --ckpt runs/demo/model_final.pth --input photos/ --output preds/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from detres.cli import run_main
from detres.config import load_config
from detres.data.image_io import read_image_rgb
from detres.data.transforms import prepare_image
from detres.distributed import resolve_device
from detres.engine.loading import load_detector
from detres.engine.soak import MemoryTrace
from detres.engine.tiled_inference import detect_image
from detres.errors import DataError, UserError
from detres.modeling.fast_inference import autocast_dtype
from detres.vis import draw_detections

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MAX_STEM = 150  # characters of an output name taken from the input path (file names end at 255 bytes)
log = logging.getLogger("detres.infer")


def find_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _sanitize(text: str) -> str:
    """Only [A-Za-z0-9._-], no leading dot (no hidden files, no '..'), at most MAX_STEM characters."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".")[:MAX_STEM] or "image"


def _candidate(relative: Path, level: int) -> str:
    """The output stem of an input at a disambiguation level: 0 the flattened path without its extension,
    1 plus the extension, 2 plus a hash of the whole relative path (distinct for distinct inputs)."""
    stem = _sanitize("__".join(relative.with_suffix("").parts))
    if level == 0:
        return stem
    stem = f"{stem}_{_sanitize(relative.suffix.lstrip('.'))}"
    if level == 1:
        return stem
    return f"{stem}_{hashlib.sha1(relative.as_posix().encode('utf-8', 'surrogateescape')).hexdigest()[:12]}"


def output_names(relatives: list[Path]) -> dict[Path, str]:
    """A distinct flat, sanitized `.jpg` file name in the output folder for each input's relative path.

    A name is the path's parts joined by '__' with every other character than [A-Za-z0-9._-] replaced, so it
    can hold no separator and no '..'. Inputs whose names would clash (x.png and x.jpg, a/b.jpg and a__b.jpg,
    X.jpg and x.jpg on a case-insensitive disk) all keep their extension, then all add a hash of their path,
    so no output overwrites another and the same folder always gets the same names, whatever the order.
    """
    level = dict.fromkeys(relatives, 0)
    while True:
        names = {rel: _candidate(rel, level[rel]) for rel in relatives}
        groups: dict[str, list[Path]] = defaultdict(list)
        for rel, name in names.items():
            groups[name.casefold()].append(rel)
        clashes = [rels for rels in groups.values() if len(rels) > 1]
        if not clashes:
            return {rel: f"{name}.jpg" for rel, name in names.items()}
        for rels in clashes:
            if all(level[rel] == 2 for rel in rels):  # equal hashes of different paths: never seen in practice
                raise UserError(f"cannot give distinct output names to {', '.join(map(str, rels))}; rename one")
            for rel in rels:
                level[rel] = min(level[rel] + 1, 2)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write through a new temporary file and a rename: never half a file under the real name, and a symlink
    already at `path` is replaced, not followed out of the output folder (the temporary file is created
    exclusively, so no planted link is followed either). UserError on a failing disk, no temporary file left."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise UserError(f"could not write {path}: {exc.strerror or exc}; check free disk space and the "
                        "permissions of --output") from None


def check_folders(input_dir: Path, output_dir: Path) -> None:
    if not input_dir.is_dir():
        raise UserError(f"--input {input_dir} is not a folder")
    src, dst = input_dir.resolve(), output_dir.resolve()
    if dst == src or src in dst.parents:
        raise UserError(f"--output {output_dir} is inside --input {input_dir}; choose a folder outside it "
                        "(detres never writes into the input folder)")


def detect_one(model, rgb: np.ndarray, cfg, device: torch.device, score_thr: float) -> tuple[np.ndarray, ...]:
    """(boxes [K, 4] XYXY in the image's pixels, scores [K], labels [K]) of the detections above `score_thr`."""
    if cfg.test.tile_size:  # large images: tiles at the training scale, merged (docs/own_data.md)
        det = detect_image(model, rgb, cfg, device)
        keep = det["scores"] >= score_thr
        return det["boxes"][keep].numpy(), det["scores"][keep].numpy(), det["labels"][keep].numpy()
    tensor, factor = prepare_image(rgb, short=cfg.data.input.test_scale, max_size=cfg.data.input.max_size,
                                   pixel_mean=cfg.model.backbone.pixel_mean, pixel_std=cfg.model.backbone.pixel_std)
    dtype = autocast_dtype(cfg.test.precision, device)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        det = model([tensor.to(device)])[0]
    keep = det["scores"] >= score_thr
    boxes = (det["boxes"][keep] / factor).cpu().numpy()
    return boxes, det["scores"][keep].cpu().numpy(), det["labels"][keep].cpu().numpy()


def _as_json(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_map) -> list[dict]:
    return [{"box": [round(float(v), 2) for v in box], "score": round(float(score), 4),
             "label": class_map.name_of(int(label))} for box, score, label in zip(boxes, scores, labels)]


def infer_folder(model, class_map, cfg, device: torch.device, input_dir: Path, output_dir: Path,
                 score_thr: float) -> dict:
    """Detect, draw and write every image under `input_dir`; return the json report.

    Unreadable images are logged and listed under "failed". Resident memory is recorded after the first tenth
    of the images (allocator and caches warmed up) and at the end, so a leak shows as "memory.growth_percent".
    """
    images = find_images(input_dir)
    if not images:
        raise UserError(f"no images ({', '.join(sorted(EXTENSIONS))}) under {input_dir}")
    relatives = [path.relative_to(input_dir) for path in images]
    names = output_names(relatives)
    output_dir.mkdir(parents=True, exist_ok=True)
    trace = MemoryTrace(baseline_step=max(1, len(images) // 10))
    results, failed, tic = {}, [], time.perf_counter()
    for count, (path, relative) in enumerate(tqdm(list(zip(images, relatives)), desc="infer"), start=1):
        try:
            rgb = read_image_rgb(path, max_pixels=cfg.data.input.max_pixels)
        except DataError as exc:
            failed.append(str(relative))
            log.warning("skipped: %s", exc)
        else:
            boxes, scores, labels = detect_one(model, rgb, cfg, device, score_thr)
            drawn = draw_detections(rgb, boxes, scores, labels, class_map.names)
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            if not ok:
                raise UserError(f"OpenCV could not encode the drawing of {path} as JPEG")
            write_file_atomic(output_dir / names[relative], jpeg.tobytes())
            results[str(relative)] = _as_json(boxes, scores, labels, class_map)
        trace.record(count)
    elapsed = time.perf_counter() - tic
    return {"detections": results, "failed": failed,
            "outputs": {str(rel): names[rel] for rel in relatives if str(rel) in results},
            "images_per_second": len(results) / max(elapsed, 1e-9), "seconds": round(elapsed, 3),
            "memory": trace.report()}


def main() -> int:
    parser = argparse.ArgumentParser(description="Run a trained detector over a folder of images.")
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--score-thr", type=float, default=0.5, help="draw and report detections above this score")
    parser.add_argument("--tile", type=int, default=None,
                        help="cut each image into tiles of this many original pixels, detected at the training "
                             "scale and merged (sets test.tile_size; default: the config's, 0 = whole image); "
                             "for example --tile 800")
    parser.add_argument("--tile-overlap", type=float, default=None,
                        help="fraction of the tile side that neighbouring tiles share (sets test.tile_overlap; "
                             "default: the config's, 0.25); for example --tile-overlap 0.3")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    check_folders(args.input, args.output)
    cfg = load_config(args.cfg, args.overrides)
    if args.tile is not None:
        cfg.test.tile_size = args.tile
    if args.tile_overlap is not None:
        cfg.test.tile_overlap = args.tile_overlap
    device = resolve_device(cfg.device)
    model, class_map, _ = load_detector(args.ckpt, cfg, optimize=True)
    model.to(device)
    report = infer_folder(model, class_map, cfg, device, args.input, args.output, args.score_thr)
    write_file_atomic(args.output / "detections.json", json.dumps(report, indent=1).encode())
    memory = report["memory"]
    print(f"{len(report['detections'])} images in {report['seconds']:.1f}s ({report['images_per_second']:.2f} "
          f"images/s), {len(report['failed'])} unreadable skipped; memory {memory['baseline_rss_mib']} MiB after "
          f"{memory['baseline_step']} images, {memory['final_rss_mib']} MiB after {memory['final_step']} images "
          f"({memory['growth_percent']:+.1f}%), peak {memory['peak_rss_mib']} MiB; results in {args.output}")
    return 0


if __name__ == "__main__":
    run_main(main)
