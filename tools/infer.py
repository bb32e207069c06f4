"""Detect objects in every image under a folder; write drawn images and one json of all detections.

    python tools/infer.py --cfg configs/demo.yaml --ckpt runs/demo/model_final.pth --input photos/ --output preds/
    detres infer --ckpt runs/demo/model_final.pth --input photos/ --output preds/ --format csv   # config: the ckpt's
"""

from __future__ import annotations

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

from detres.cli import add_overrides, add_progress, run_main, tool_parser
from detres.cli.ckpt_config import add_cfg_from_ckpt, config_for_checkpoint
from detres.cli.progress import progress
from detres.data.image_io import read_image_rgb
from detres.data.transforms import prepare_image
from detres.distributed import resolve_device
from detres.engine.detection_export import export_detections
from detres.engine.inference import to_original
from detres.engine.loading import load_detector
from detres.engine.soak import MemoryTrace
from detres.errors import DataError, UserError
from detres.io.detection_formats import FORMATS
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
    tensor, factor = prepare_image(rgb, short=cfg.data.input.test_scale, max_size=cfg.data.input.max_size,
                                   pixel_mean=cfg.model.backbone.pixel_mean, pixel_std=cfg.model.backbone.pixel_std)
    dtype = autocast_dtype(cfg.test.precision, device)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        det = model([tensor.to(device)])[0]
    keep = det["scores"] >= score_thr
    # back to the image's pixels by each axis's own resize ratio (sizes are rounded), as detres test maps them
    scale = (tensor.shape[1] / rgb.shape[0], tensor.shape[2] / rgb.shape[1])
    found = to_original({k: v[keep] for k, v in det.items()}, {"scale": scale, "orig_size": rgb.shape[:2]})
    return found["boxes"], found["scores"], found["labels"]


def _float32(value) -> float:
    """The shortest decimal that reads back as the same float32: full precision in few digits, so a results file
    converted from detections.json (--format coco) gives the metrics of detres test; rounded scores would tie."""
    return float(str(np.float32(value)))


def _as_json(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_map) -> list[dict]:
    return [{"box": [_float32(v) for v in box], "score": _float32(score),
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
    for count, (path, relative) in enumerate(progress(list(zip(images, relatives)), desc="infer"), start=1):
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
    parser = tool_parser(__doc__)
    add_cfg_from_ckpt(parser)
    parser.add_argument("--ckpt", required=True, metavar="PTH",
                        help="trained detection checkpoint, e.g. runs/demo/model_final.pth")
    parser.add_argument("--input", required=True, type=Path, metavar="DIR",
                        help="folder of images, searched recursively (jpg, png, bmp, webp, tif), e.g. photos/")
    parser.add_argument("--output", required=True, type=Path, metavar="DIR",
                        help="folder for the drawn images and detections.json, outside --input, e.g. preds/")
    parser.add_argument("--score-thr", type=float, default=0.5, metavar="SCORE",
                        help="draw and report detections with at least this score, e.g. 0.3")
    parser.add_argument("--format", choices=FORMATS, default="json",
                        help="results besides the drawn images: json: detections.json, detres's report (always "
                             "written); coco: also detections_coco.json, a COCO results list that pycocotools and "
                             "`detres eval` read (image ids from --gt, else 1..N in sorted file order, listed in "
                             "detections_coco_images.json); csv: also detections.csv, one row per detection (image, "
                             "class, score, x1, y1, x2, y2); voc: also voc/Annotations/*.xml, one VOC xml per image "
                             "that labelImg and CVAT open as pre-annotations")
    parser.add_argument("--gt", type=Path, metavar="JSON",
                        help="with --format coco, when --input is a COCO dataset's image folder: its annotation "
                             "file, e.g. datasets/shapes/coco/annotations/instances_val.json, whose image ids the "
                             "results use (default: none, ids 1..N in sorted file order)")
    add_overrides(parser)
    add_progress(parser)
    args = parser.parse_args()
    if args.gt is not None and args.format != "coco":
        parser.error("--gt goes with --format coco")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    check_folders(args.input, args.output)
    cfg = config_for_checkpoint(args.cfg, args.ckpt, args.overrides)
    device = resolve_device(cfg.device)
    model, class_map, _ = load_detector(args.ckpt, cfg, optimize=True)
    model.to(device)
    report = infer_folder(model, class_map, cfg, device, args.input, args.output, args.score_thr)
    write_file_atomic(args.output / "detections.json", json.dumps(report, indent=1).encode())
    for path in export_detections(report, args.format, args.output, input_dir=args.input, class_map=class_map,
                                  gt=args.gt):
        print(f"wrote {path}")
    memory = report["memory"]
    print(f"{len(report['detections'])} images in {report['seconds']:.1f}s ({report['images_per_second']:.2f} "
          f"images/s), {len(report['failed'])} unreadable skipped; memory {memory['baseline_rss_mib']} MiB after "
          f"{memory['baseline_step']} images, {memory['final_rss_mib']} MiB after {memory['final_step']} images "
          f"({memory['growth_percent']:+.1f}%), peak {memory['peak_rss_mib']} MiB; results in {args.output}")
    return 0


if __name__ == "__main__":
    run_main(main)
