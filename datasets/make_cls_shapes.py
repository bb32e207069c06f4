"""Generate the synthetic classification set in the ImageNet folder layout (the classification demo's data).

    python datasets/make_cls_shapes.py --out datasets/shapes_cls --seed 0

Writes OUT/train/<wnid>/*.JPEG and OUT/val/<wnid>/*.JPEG plus OUT/synsets.txt ("<wnid> <name>" per line).
Each image shows one shape (the class) of random colour, size and position on a noisy textured background,
so that colour does not give the class away and a tiny ResNet has something to learn.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

CLASSES = ["circle", "square", "triangle", "cross", "ring", "star"]


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if kind == "triangle":
        k, radii = 3, [r]
    elif kind == "square":
        k, radii = 4, [r]
    elif kind == "star":
        k, radii = 10, [r, r * 0.45]
    else:
        raise ValueError(kind)
    t = angle + np.arange(k) * 2 * np.pi / k
    rr = np.array([radii[i % len(radii)] for i in range(k)])
    return np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], 1).round().astype(np.int32)


def draw_shape(image: np.ndarray, kind: str, cx: float, cy: float, r: float, angle: float,
               colour: tuple[int, int, int]) -> None:
    """Draw one shape of radius r centred at (cx, cy) into the uint8 RGB image."""
    c, thick = (round(cx), round(cy)), max(2, round(r / 3))
    if kind == "circle":
        cv2.circle(image, c, round(r), colour, -1, cv2.LINE_AA)
    elif kind == "ring":
        cv2.circle(image, c, round(r * 0.8), colour, thick, cv2.LINE_AA)
    elif kind == "cross":
        d = r * 0.8
        for a in (angle, angle + np.pi / 2):
            p1 = (round(cx - d * np.cos(a)), round(cy - d * np.sin(a)))
            p2 = (round(cx + d * np.cos(a)), round(cy + d * np.sin(a)))
            cv2.line(image, p1, p2, colour, thick, cv2.LINE_AA)
    else:
        cv2.fillPoly(image, [_polygon(kind, cx, cy, r, angle)], colour, cv2.LINE_AA)


def make_image(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """One size x size RGB image with a single shape of class `kind`."""
    base = rng.integers(40, 200, 3)
    image = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 3))):  # clutter: a few random lines
        p1, p2 = tuple(int(v) for v in rng.integers(0, size, 2)), tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.line(image, p1, p2, tuple(int(v) for v in rng.integers(0, 255, 3)), 1)
    r = rng.uniform(0.25, 0.45) * size
    cx, cy = rng.uniform(r, size - r, 2)
    colour = tuple(int(v) for v in rng.integers(0, 255, 3))
    draw_shape(image, kind, cx, cy, r, rng.uniform(0, 2 * np.pi), colour)
    return image


def generate(out: str | os.PathLike, seed: int = 0, train_per_class: int = 120, val_per_class: int = 30,
             size: int = 64) -> Path:
    """Write the whole set; the same seed writes the same files."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    wnids = [f"n{index:08d}" for index in range(len(CLASSES))]
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for wnid, kind in zip(wnids, CLASSES):
            folder = out / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rgb = make_image(rng, kind, size)
                cv2.imwrite(str(folder / f"{wnid}_{i:05d}.JPEG"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
    (out / "synsets.txt").write_text("".join(f"{w} {k}\n" for w, k in zip(wnids, CLASSES)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="datasets/shapes_cls")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=120)
    parser.add_argument("--val-per-class", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    out = generate(args.out, args.seed, args.train_per_class, args.val_per_class, args.size)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
