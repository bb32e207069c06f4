"""Shared helpers of the analysis tests: a generated shapes set and noisy COCO results of it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402


def shapes_val(root: Path, num_val: int = 24, seed: int = 3):
    """(json path, image folder) of a small generated shapes validation split."""
    out = make_shapes.generate(root, seed=seed, num_train=2, num_val=num_val)
    return out / "coco/annotations/instances_val.json", out / "coco/val"


def noisy_results(dataset: dict, seed: int = 0) -> list[dict]:
    """COCO results from the ground truth with box noise, dropped objects, wrong classes and boxes on nothing."""
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in dataset["categories"]]
    out = []
    for a in dataset["annotations"]:
        if rng.random() < 0.15:
            continue
        x, y, w, h = a["bbox"]
        cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
        out.append({"image_id": a["image_id"], "category_id": cat, "score": float(rng.uniform(0.3, 1)),
                    "bbox": [x + float(rng.normal(0, 3)), y + float(rng.normal(0, 3)), w, h]})
    for im in dataset["images"]:
        out.append({"image_id": im["id"], "category_id": int(rng.choice(cats)), "bbox": [5.0, 5.0, 20.0, 20.0],
                    "score": float(rng.uniform(0, 0.6))})
    return out
