"""A synthetic COCO-like ground truth and noisy results of it, for timing and comparing COCO evaluators."""

from __future__ import annotations

import numpy as np
from pycocotools.coco import COCO

from detres.data.records import ClassMap, DetRecord
from detres.evaluation.coco import coco_from_records


def synthetic_coco(num_images: int, num_classes: int, *, seed: int = 0, objects_per_image: int = 7,
                   size: int = 640) -> tuple[COCO, list[dict]]:
    """(ground truth, results): boxes of 8-320 px; results keep 85% of the objects with 4 px noise, 10% of them
    with a wrong class, plus 20 low-scoring boxes on random places per image (COCO's maxDets is 100)."""
    rng = np.random.default_rng(seed)
    ids = list(range(1, num_classes + 1))
    class_map = ClassMap(names=[f"c{i}" for i in ids], dataset_ids=ids)
    records, results = [], []
    for image_id in range(1, num_images + 1):
        n = int(rng.poisson(objects_per_image))
        wh = np.exp(rng.uniform(np.log(8), np.log(320), (n, 2)))
        xy = rng.uniform(0, size - wh)
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        labels = rng.integers(1, num_classes + 1, n)
        records.append(DetRecord("", image_id, size, size, boxes, labels, np.zeros(n, bool)))
        for (x1, y1, x2, y2), label in zip(boxes, labels):
            if rng.random() < 0.15:
                continue
            cat = int(label) if rng.random() > 0.1 else int(rng.integers(1, num_classes + 1))
            x, y = x1 + rng.normal(0, 4), y1 + rng.normal(0, 4)
            results.append({"image_id": image_id, "category_id": cat, "score": float(rng.uniform(0.2, 1)),
                            "bbox": [float(x), float(y), float(x2 - x1), float(y2 - y1)]})
        for _ in range(20):
            x, y, w, h = rng.uniform(0, size - 64, 2).tolist() + rng.uniform(8, 64, 2).tolist()
            results.append({"image_id": image_id, "category_id": int(rng.integers(1, num_classes + 1)),
                            "score": float(rng.uniform(0, 0.5)), "bbox": [x, y, w, h]})
    return coco_from_records(records, class_map), results
