"""Generate a small synthetic localization set in the ImageNet CLS-LOC layout (docs/localization.md).

One dominant shape per image (sometimes two or three of the same class), several classes, varied scale and
position, on a cluttered background; small images, so a tiny model learns it on the CPU in minutes.

    python datasets/make_loc_shapes.py --out datasets/loc_shapes --seed 0
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np

# (wnid, name): fake synset ids so the reader is exercised exactly as on ILSVRC.
CLASSES = [
    ("n00000001", "disc"),
    ("n00000002", "square"),
    ("n00000003", "triangle"),
    ("n00000004", "cross"),
    ("n00000005", "ring"),
    ("n00000006", "bar"),
]


def _draw_shape(img: np.ndarray, kind: str, box: tuple[int, int, int, int], color: tuple[int, ...]) -> None:
    """Draw `kind` filling the integer box (x1, y1, x2, y2), exclusive right/bottom edge."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, cy = x1 + w / 2, y1 + h / 2
    if kind == "disc":
        cv2.ellipse(img, (round(cx), round(cy)), (w // 2, h // 2), 0, 0, 360, color, -1)
    elif kind == "square":
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), color, -1)
    elif kind == "triangle":
        pts = np.array([[x1, y2 - 1], [x2 - 1, y2 - 1], [round(cx), y1]], np.int32)
        cv2.fillPoly(img, [pts], color)
    elif kind == "cross":
        t = max(2, min(w, h) // 4)
        cv2.rectangle(img, (x1, round(cy) - t), (x2 - 1, round(cy) + t), color, -1)
        cv2.rectangle(img, (round(cx) - t, y1), (round(cx) + t, y2 - 1), color, -1)
    elif kind == "ring":
        t = max(2, min(w, h) // 6)
        cv2.ellipse(img, (round(cx), round(cy)), (w // 2 - t // 2, h // 2 - t // 2), 0, 0, 360, color, t)
    elif kind == "bar":  # a thick diagonal bar filling its box corner to corner
        t = max(2, min(w, h) // 4)
        cv2.line(img, (x1 + t // 2, y1 + t // 2), (x2 - 1 - t // 2, y2 - 1 - t // 2), color, t)
    else:
        raise ValueError(kind)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth colour gradient plus a few thin lines and noise, so the box is not found by thresholding."""
    c0, c1 = rng.integers(0, 140, 3), rng.integers(0, 140, 3)
    t = np.linspace(0, 1, w)[None, :, None]
    img = (c0 * (1 - t) + c1 * t) * np.ones((h, 1, 1))
    img = img.astype(np.uint8).copy()
    for _ in range(int(rng.integers(1, 4))):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p1, p2, tuple(int(v) for v in rng.integers(0, 200, 3)), 1)
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _random_box(rng: np.random.Generator, w: int, h: int, lo: float, hi: float) -> tuple[int, int, int, int]:
    side = min(w, h)
    bw = int(side * rng.uniform(lo, hi))
    bh = int(np.clip(bw * rng.uniform(0.7, 1.4), side * lo, h))
    x1 = int(rng.integers(0, w - bw + 1))
    y1 = int(rng.integers(0, h - bh + 1))
    return x1, y1, x1 + bw, y1 + bh


def make_image(rng: np.random.Generator, kind: str, size: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """One image (RGB uint8) with one dominant `kind` (25% of images: 2-3 smaller ones) and their boxes."""
    w = int(size * rng.uniform(0.9, 1.4))
    h = int(size * rng.uniform(0.9, 1.2))
    img = _background(rng, h, w)
    count = 1 if rng.random() < 0.75 else int(rng.integers(2, 4))
    lo, hi = (0.3, 0.85) if count == 1 else (0.2, 0.45)
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(count * 10):  # rejection sampling: same-class objects that do not overlap much
        if len(boxes) == count:
            break
        box = _random_box(rng, w, h, lo, hi)
        if all(_iou(box, b) < 0.1 for b in boxes):
            boxes.append(box)
    for box in boxes:
        color = tuple(int(v) for v in rng.integers(150, 256, 3))
        _draw_shape(img, kind, box, color)
    return img, boxes


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _xml(folder: str, stem: str, wnid: str, w: int, h: int, boxes: list[tuple[int, int, int, int]]) -> str:
    # ILSVRC convention: integer, 0-based, inclusive pixel indices (xmax = last pixel column of the object).
    objects = "".join(
        f"  <object>\n    <name>{wnid}</name>\n    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n"
        f"    <difficult>0</difficult>\n    <bndbox>\n      <xmin>{x1}</xmin>\n      <ymin>{y1}</ymin>\n"
        f"      <xmax>{x2 - 1}</xmax>\n      <ymax>{y2 - 1}</ymax>\n    </bndbox>\n  </object>\n"
        for x1, y1, x2, y2 in boxes)
    return (f"<annotation>\n  <folder>{folder}</folder>\n  <filename>{stem}</filename>\n"
            f"  <source>\n    <database>detres loc_shapes</database>\n  </source>\n"
            f"  <size>\n    <width>{w}</width>\n    <height>{h}</height>\n    <depth>3</depth>\n  </size>\n"
            f"  <segmented>0</segmented>\n{objects}</annotation>\n")


def generate(out_dir: str | Path, seed: int = 0, num_train: int = 40, num_val: int = 40, size: int = 80,
             num_classes: int = len(CLASSES), unannotated_fraction: float = 0.1) -> Path:
    """Write the set under out_dir (ILSVRC layout); num_train / num_val are per class. Returns out_dir.

    A fraction of the training images gets no xml (usable for classification only), as on ILSVRC.
    """
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    rng = np.random.default_rng(seed)
    classes = CLASSES[:num_classes]
    data, ann = out / "Data" / "CLS-LOC", out / "Annotations" / "CLS-LOC"
    out.mkdir(parents=True)
    (out / "LOC_synset_mapping.txt").write_text("".join(f"{wnid} {name}\n" for wnid, name in classes))
    for wnid, kind in classes:
        (data / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (ann / "train" / wnid).mkdir(parents=True, exist_ok=True)
        for i in range(num_train):
            img, boxes = make_image(rng, kind, size)
            stem = f"{wnid}_{i + 1}"
            cv2.imwrite(str(data / "train" / wnid / f"{stem}.JPEG"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
            if rng.random() >= unannotated_fraction:
                (ann / "train" / wnid / f"{stem}.xml").write_text(
                    _xml(wnid, stem, wnid, img.shape[1], img.shape[0], boxes))
    (data / "val").mkdir(parents=True, exist_ok=True)
    (ann / "val").mkdir(parents=True, exist_ok=True)
    order = [(wnid, kind) for wnid, kind in classes for _ in range(num_val)]
    for val_index, j in enumerate(rng.permutation(len(order)), 1):  # val is not grouped by class, as on ILSVRC
        wnid, kind = order[j]
        img, boxes = make_image(rng, kind, size)
        stem = f"ILSVRC2012_val_{val_index:08d}"
        cv2.imwrite(str(data / "val" / f"{stem}.JPEG"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        (ann / "val" / f"{stem}.xml").write_text(_xml("val", stem, wnid, img.shape[1], img.shape[0], boxes))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="datasets/loc_shapes", help="output folder (replaced if it exists)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=40, help="training images per class")
    parser.add_argument("--num-val", type=int, default=40, help="validation images per class")
    parser.add_argument("--size", type=int, default=80, help="approximate shorter image side in pixels")
    args = parser.parse_args()
    out = generate(args.out, args.seed, args.num_train, args.num_val, args.size)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
