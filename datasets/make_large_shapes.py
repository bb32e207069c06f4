"""Large images for tiled inference: the demo's shapes at the demo's pixel sizes, on images GRID times larger.

    python datasets/make_large_shapes.py --out datasets/shapes_large --grid 6 --num 4

Each image is SIDE = GRID * 160 pixels square (160: the demo's typical image side) and holds about as many
objects as GRID x GRID demo images, drawn by datasets/make_shapes.py's own shape, background and placement code
on each 160-px cell, so sizes (12 px up to 0.7 of a cell), aspect ratios and clutter match the training set while
the image is GRID times larger: the case of an aerial or microscopy image read by a detector trained on small
crops. Written as COCO json (annotations.json) with the demo's categories.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np
from make_shapes import CATEGORY_IDS, CLASSES, background, place_objects

CELL = 160


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder (images/, annotations.json)")
    parser.add_argument("--grid", type=int, default=6, help="image side in demo-image sides (160 px); default 6")
    parser.add_argument("--num", type=int, default=4, help="number of images; default 4")
    parser.add_argument("--seed", type=int, default=1, help="random seed; default 1")
    args = parser.parse_args()
    count = generate(args.out, grid=args.grid, num=args.num, seed=args.seed)
    print(f"{args.num} images of {args.grid * CELL}x{args.grid * CELL} px with {count} boxes in {args.out}")


def generate(out: str | os.PathLike, *, grid: int = 6, num: int = 4, seed: int = 1) -> int:
    """Write `num` images of grid x grid cells and their annotations.json under `out`; returns the box count."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    side = grid * CELL
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for index in range(num):
        image = background(rng, side, side)
        for cy in range(grid):  # the demo's clutter density: lines and shapes drawn cell by cell
            for cx in range(grid):
                view = image[cy * CELL:(cy + 1) * CELL, cx * CELL:(cx + 1) * CELL]
                for _ in range(int(rng.integers(3, 10))):  # as make_shapes.background's lines, per cell
                    p1 = tuple(int(v) for v in rng.integers(0, CELL, 2))
                    p2 = tuple(int(v) for v in rng.integers(0, CELL, 2))
                    cv2.line(view, p1, p2, tuple(int(v) for v in rng.integers(0, 255, 3)), int(rng.integers(1, 3)))
                for kind, (x1, y1, x2, y2) in place_objects(rng, view):
                    anns.append({"id": len(anns) + 1, "image_id": index + 1, "category_id": CATEGORY_IDS[kind],
                                 "bbox": [x1 + cx * CELL, y1 + cy * CELL, x2 - x1, y2 - y1],
                                 "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        name = f"large_{index:04d}.jpg"
        cv2.imwrite(str(out / "images" / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        images.append({"id": index + 1, "file_name": name, "width": side, "height": side})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": i, "name": n, "supercategory": "shape"} for i, n in zip(CATEGORY_IDS, CLASSES)]}
    tmp = out / ".annotations.json.tmp"
    tmp.write_text(json.dumps(coco))
    os.replace(tmp, out / "annotations.json")
    return len(anns)


if __name__ == "__main__":
    main()
