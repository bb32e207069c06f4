"""Cut a COCO set of large images into fixed tiles offline, boxes clipped: what users do today before training
(DeepForest's split_raster, SAHI's slice_coco), kept as the baseline that data.train_crop replaces.

    python datasets/cut_tiles.py --ann datasets/shapes_large/train/annotations.json \
        --images datasets/shapes_large/train/images --out datasets/shapes_large/train_tiles --size 192

Tiles are detres's test-time grid (detres.modeling.tiling.tile_grid: side --size, neighbours sharing --overlap of
it), and a box keeps its clipped part if at least --min-visibility of its area is inside, the rule of
data.train_crop (detres.data.crops.crop_boxes). Tiles without a box are left out, as slice_coco does by default.
Written as COCO json (annotations.json) and PNG tiles (no second JPEG loss).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from detres.data.coco import read_coco
from detres.data.crops import crop_boxes
from detres.data.image_io import read_image_rgb
from detres.io.atomic import write_atomic
from detres.modeling.tiling import tile_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann", required=True, type=Path, help="COCO json of the large images")
    parser.add_argument("--images", required=True, type=Path, help="folder of the large images")
    parser.add_argument("--out", required=True, type=Path, help="output folder (images/, annotations.json)")
    parser.add_argument("--size", type=int, default=512, help="tile side in pixels; default 512")
    parser.add_argument("--overlap", type=float, default=0.25, help="fraction of --size neighbours share; "
                                                                    "default 0.25 (test.tile_overlap's default)")
    parser.add_argument("--min-visibility", type=float, default=0.1,
                        help="a clipped box is kept if this fraction of it is inside; default 0.1")
    args = parser.parse_args()
    records, class_map = read_coco(args.ann, args.images)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for rec in records:
        rgb = read_image_rgb(rec.image_path)
        for x1, y1, x2, y2 in tile_grid(rec.height, rec.width, size=args.size, overlap=args.overlap).tolist():
            boxes, labels, ignore = crop_boxes(rec.boxes, rec.labels, rec.ignore, (x1, y1, x2 - x1, y2 - y1),
                                               args.min_visibility)
            if not len(boxes):
                continue
            name = f"{Path(rec.image_path).stem}_{x1}_{y1}.png"
            cv2.imwrite(str(args.out / "images" / name), cv2.cvtColor(rgb[y1:y2, x1:x2], cv2.COLOR_RGB2BGR))
            images.append({"id": len(images) + 1, "file_name": name, "width": x2 - x1, "height": y2 - y1})
            for box, label, crowd in zip(boxes.tolist(), labels.tolist(), ignore.tolist()):
                w, h = box[2] - box[0], box[3] - box[1]
                anns.append({"id": len(anns) + 1, "image_id": len(images), "bbox": [box[0], box[1], w, h],
                             "category_id": class_map.dataset_ids[label - 1], "area": w * h, "iscrowd": int(crowd)})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": i, "name": n} for i, n in zip(class_map.dataset_ids, class_map.names)]}
    write_atomic(args.out / "annotations.json", json.dumps(coco))
    print(f"{len(images)} tiles of {args.size} px with {len(anns)} boxes from {len(records)} images in {args.out}")


if __name__ == "__main__":
    main()
