"""Large images for tiled inference: mosaics of GRID x GRID images of a COCO set, with their boxes, as COCO json.

    python datasets/make_mosaics.py --ann datasets/shapes/coco/annotations/instances_val.json \
        --images datasets/shapes/coco/val --out datasets/shapes_mosaic --grid 6

Each mosaic holds GRID x GRID consecutive images of the source, each pasted at the top-left of a cell as large
as the source's largest image (gaps filled with mid-grey), so the objects keep their pixel sizes while the image
grows GRID times: the case of an aerial or microscopy image that a detector trained on small crops must read.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann", required=True, type=Path, help="source COCO json, e.g. .../instances_val.json")
    parser.add_argument("--images", required=True, type=Path, help="folder of the source images")
    parser.add_argument("--out", required=True, type=Path, help="output folder (images/ and annotations.json)")
    parser.add_argument("--grid", type=int, default=6, help="source images per mosaic side; default 6")
    args = parser.parse_args()
    src = json.loads(args.ann.read_text())
    images = sorted(src["images"], key=lambda im: im["id"])
    by_image: dict[int, list[dict]] = {}
    for ann in src["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    cell = max(max(im["width"], im["height"]) for im in images)
    per = args.grid * args.grid
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    out_images, out_anns = [], []
    for m in range(len(images) // per):
        canvas = np.full((cell * args.grid, cell * args.grid, 3), 127, np.uint8)
        for k, im in enumerate(images[m * per:(m + 1) * per]):
            ox, oy = (k % args.grid) * cell, (k // args.grid) * cell
            pixels = cv2.imread(str(args.images / im["file_name"]), cv2.IMREAD_COLOR)
            canvas[oy:oy + im["height"], ox:ox + im["width"]] = pixels
            for ann in by_image.get(im["id"], []):
                x, y, w, h = ann["bbox"]
                out_anns.append({**ann, "id": len(out_anns) + 1, "image_id": m + 1, "bbox": [x + ox, y + oy, w, h]})
        name = f"mosaic_{m:04d}.png"
        cv2.imwrite(str(args.out / "images" / name), canvas)
        out_images.append({"id": m + 1, "file_name": name, "width": canvas.shape[1], "height": canvas.shape[0]})
    tmp = args.out / ".annotations.json.tmp"
    tmp.write_text(json.dumps({"images": out_images, "annotations": out_anns, "categories": src["categories"]}))
    os.replace(tmp, args.out / "annotations.json")
    print(f"{len(out_images)} mosaics of {cell * args.grid} px with {len(out_anns)} boxes in {args.out}")


if __name__ == "__main__":
    main()
