"""Write a copy of a COCO-format split whose images differ in orientation and lighting from the training images.

    python datasets/shift_split.py --ann datasets/shapes/coco/annotations/instances_val.json \
        --images datasets/shapes/coco/val --out datasets/shapes_shifted

Every image is turned by a multiple of 90 degrees (a quarter each of 0, 90, 180, 270, by index) and re-lit
(brightness and contrast scaled by 0.4-1.6, gamma 0.5-2); the boxes move with the pixels. Held-out
images that differ from the training ones this way are what a user's real data looks like (docs/own_data.md uses
this split to measure what data.augment buys). Same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np


def shift_image(rgb: np.ndarray, boxes: np.ndarray, index: int, rng: np.random.Generator):
    """(image, boxes [N, 4] XYXY) turned by (index % 4) * 90 degrees and re-lit by a draw of `rng`."""
    k = index % 4
    if k:  # by hand: albumentations' RandomRotate90 draws its own number of turns, here it is set by the index
        out = np.ascontiguousarray(np.rot90(rgb, k=-k))  # clockwise
        h, w = rgb.shape[:2]
        b = boxes.copy()
        for _ in range(k):  # clockwise quarter turn of an h x w image: (x, y) -> (h - y, x)
            b = np.stack([h - b[:, 3], b[:, 0], h - b[:, 1], b[:, 2]], 1)
            h, w = w, h
        rgb, boxes = out, b
    gain, gamma = rng.uniform(0.4, 1.6), rng.uniform(0.5, 2.0)
    lit = ((rgb.astype(np.float32) / 255.0) ** gamma * gain * 255.0).clip(0, 255).astype(np.uint8)
    return lit, boxes.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ann", required=True, help="COCO json of the split to copy, e.g. "
                        "datasets/shapes/coco/annotations/instances_val.json")
    parser.add_argument("--images", required=True, help="its image folder, e.g. datasets/shapes/coco/val")
    parser.add_argument("--out", required=True, help="output folder (written: images/ and annotations.json), "
                        "e.g. datasets/shapes_shifted")
    parser.add_argument("--seed", type=int, default=0, help="seed of the lighting draws (default 0)")
    args = parser.parse_args()
    data = json.loads(Path(args.ann).read_text())
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for index, image in enumerate(data["images"]):
        bgr = cv2.imread(str(Path(args.images) / image["file_name"]))
        anns = by_image.get(image["id"], [])
        xywh = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        rgb, boxes = shift_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), boxes, index, rng)
        cv2.imwrite(str(out / "images" / image["file_name"]), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        image["height"], image["width"] = rgb.shape[:2]
        for ann, (x1, y1, x2, y2) in zip(anns, boxes.tolist()):
            ann["bbox"] = [x1, y1, x2 - x1, y2 - y1]
    (out / "annotations.json").write_text(json.dumps(data))
    print(f"{len(data['images'])} images written to {out}")


if __name__ == "__main__":
    main()
