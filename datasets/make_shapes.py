"""Generate the synthetic detection set (the embedded default) in real COCO json AND VOC xml formats.

    python datasets/make_shapes.py --out datasets/shapes --seed 0

Layout (images written once, both annotation formats describe the same boxes):
    OUT/VOCdevkit/VOC2007/JPEGImages/{train,val}_NNNNNN.jpg
    OUT/VOCdevkit/VOC2007/Annotations/*.xml           VOC: 1-based pixels, xmin = x1 + 1, xmax = x2
    OUT/VOCdevkit/VOC2007/ImageSets/Main/{train,val}.txt
    OUT/VOCdevkit/VOC2007/classes.txt                  class names in label order (non-VOC class list)
    OUT/coco/annotations/instances_{train,val}.json    COCO: bbox [x, y, w, h], non-contiguous category ids
    OUT/coco/{train,val}/*.jpg                          hard links to the same image files
Six shape classes of random colour (the shape, not the colour, tells the class), sizes from ~12 px to most of
the image, aspect ratios 1:2 to 2:1, partial occlusion, textured cluttered backgrounds, ~8% empty images.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

CLASSES = ["circle", "square", "triangle", "star", "cross", "ring"]
CATEGORY_IDS = [1, 2, 4, 5, 7, 9]  # deliberately non-contiguous, as COCO's are
CANVAS = 64  # shapes are drawn on a square canvas, then stretched to their box


def shape_mask(kind: str, angle: float) -> np.ndarray:
    """CANVAS x CANVAS uint8 mask of one shape filling the canvas."""
    mask = np.zeros((CANVAS, CANVAS), np.uint8)
    c, r = CANVAS / 2, CANVAS / 2 - 1
    if kind == "circle":
        cv2.circle(mask, (CANVAS // 2, CANVAS // 2), int(r), 255, -1)
    elif kind == "ring":
        cv2.circle(mask, (CANVAS // 2, CANVAS // 2), int(r * 0.8), 255, int(r * 0.35))
    elif kind == "square":
        mask[1:-1, 1:-1] = 255
    elif kind == "cross":
        t = int(r * 0.35)
        mask[CANVAS // 2 - t:CANVAS // 2 + t, 1:-1] = 255
        mask[1:-1, CANVAS // 2 - t:CANVAS // 2 + t] = 255
    else:
        k, radii = (3, [r]) if kind == "triangle" else (10, [r, r * 0.45])
        t = angle + np.arange(k) * 2 * np.pi / k
        rr = np.array([radii[i % len(radii)] for i in range(k)])
        pts = np.stack([c + rr * np.cos(t), c + rr * np.sin(t)], 1).round().astype(np.int32)
        cv2.fillPoly(mask, [pts], 255)
    return mask


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured, cluttered background: colour gradient, noise, random lines and blobs."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b = rng.integers(30, 220, 3), rng.integers(30, 220, 3)
    t = (x / width * rng.uniform(-1, 1) + y / height * rng.uniform(-1, 1)) % 1.0
    image = a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]
    image += rng.normal(0, 10, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 10))):
        p1 = tuple(int(v) for v in (rng.integers(0, width), rng.integers(0, height)))
        p2 = tuple(int(v) for v in (rng.integers(0, width), rng.integers(0, height)))
        cv2.line(image, p1, p2, tuple(int(v) for v in rng.integers(0, 255, 3)), int(rng.integers(1, 3)))
    return image


def place_objects(rng: np.random.Generator, image: np.ndarray, min_object: int = 12) -> list[tuple[int, list[int]]]:
    """Draw 0-6 shapes into the image (later ones may occlude earlier ones); return (class index, XYXY box).

    Object sides are log-uniform from `min_object` px to 0.7 of the image's shorter side.
    """
    height, width = image.shape[:2]
    count = 0 if rng.random() < 0.08 else int(rng.integers(1, 7))
    objects: list[tuple[int, list[int]]] = []
    for _ in range(count):
        side = float(np.exp(rng.uniform(np.log(min_object), np.log(0.7 * min(height, width)))))
        aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        w = max(8, min(width - 2, round(side * np.sqrt(aspect))))
        h = max(8, min(height - 2, round(side / np.sqrt(aspect))))
        x1, y1 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        box = [x1, y1, x1 + w, y1 + h]
        if any(_overlap_of(box, other) > 0.5 for _, other in objects):
            continue  # keep occlusion partial: no object hidden by more than half
        kind = int(rng.integers(len(CLASSES)))
        mask = cv2.resize(shape_mask(CLASSES[kind], rng.uniform(0, 2 * np.pi)), (w, h)) > 127
        colour = rng.integers(0, 255, 3)
        region = image[y1:y1 + h, x1:x1 + w]
        region[mask] = np.clip(colour + rng.normal(0, 8, (int(mask.sum()), 3)), 0, 255).astype(np.uint8)
        ys, xs = np.nonzero(mask)
        objects.append((kind, [x1 + int(xs.min()), y1 + int(ys.min()), x1 + int(xs.max()) + 1, y1 + int(ys.max()) + 1]))
    return objects


def _overlap_of(a: list[int], b: list[int]) -> float:
    """Fraction of box b covered by box a."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / max(1, (b[2] - b[0]) * (b[3] - b[1]))


def voc_xml(name: str, width: int, height: int, objects: list[tuple[int, list[int]]]) -> str:
    parts = [f"<annotation><folder>VOC2007</folder><filename>{escape(name)}.jpg</filename>",
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for kind, (x1, y1, x2, y2) in objects:
        parts.append(f"<object><name>{CLASSES[kind]}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin>"
                     f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>\n"


def generate(out: str | os.PathLike, seed: int = 0, num_train: int = 500, num_val: int = 100,
             min_size: int = 128, max_size: int = 192, min_object: int = 12) -> Path:
    """Write the set under `out`; the same arguments write the same bytes.

    min_size/max_size bound each image side; min_object is the smallest object side (a larger one keeps the
    objects of a set of larger images visible at stride 16, e.g. 400-480 px images with objects from 32 px).
    """
    out = Path(out)
    voc = out / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("annotations", "train", "val"):
        (out / "coco" / sub).mkdir(parents=True, exist_ok=True)
    (voc / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    rng = np.random.default_rng(seed)
    ann_id = 1
    for split, count in (("train", num_train), ("val", num_val)):
        coco = {"images": [], "annotations": [],
                "categories": [{"id": i, "name": n, "supercategory": "shape"} for i, n in zip(CATEGORY_IDS, CLASSES)]}
        names = []
        for index in range(count):
            name = f"{split}_{index:06d}"
            height, width = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
            image = background(rng, height, width)
            objects = place_objects(rng, image, min_object)
            jpg = voc / "JPEGImages" / f"{name}.jpg"
            cv2.imwrite(str(jpg), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            link = out / "coco" / split / jpg.name
            link.unlink(missing_ok=True)
            os.link(jpg, link)
            (voc / "Annotations" / f"{name}.xml").write_text(voc_xml(name, width, height, objects))
            image_id = index + (1 if split == "train" else 1_000_001)
            coco["images"].append({"id": image_id, "file_name": f"{name}.jpg", "width": width, "height": height})
            for kind, (x1, y1, x2, y2) in objects:
                coco["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": CATEGORY_IDS[kind],
                                            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                            "iscrowd": 0})
                ann_id += 1
            names.append(name)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
        (out / "coco" / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic shapes detection set.")
    parser.add_argument("--out", default="datasets/shapes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=500)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--min-size", type=int, default=128)
    parser.add_argument("--max-size", type=int, default=192)
    parser.add_argument("--min-object", type=int, default=12, help="smallest object side in px (default 12)")
    args = parser.parse_args()
    out = generate(args.out, args.seed, args.num_train, args.num_val, args.min_size, args.max_size, args.min_object)
    print(f"wrote {out} ({args.num_train} train / {args.num_val} val images)")


if __name__ == "__main__":
    main()
