"""Dataset statistics: counts per class and per image, and the boxes as the model sees them at the training scale.

Read from the annotations alone (the records hold each image's size), so a dataset of any size is summarized
without decoding an image. Plots are matplotlib PNGs (Agg backend: no display needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detres.data.records import ClassMap, DetRecord
from detres.data.transforms import resize_factor
from detres.errors import DataError
from detres.io.atomic import atomic_file


@dataclass
class ScaledBoxes:
    """Every trainable ground-truth box, once per training scale, in the resized image's pixels.

    boxes: [N, 4] XYXY; labels: [N] 1..C; image_hw: [N, 2] the resized image's (height, width); scale: [N] the
    training scale (shorter side) it was resized to.
    """

    boxes: np.ndarray
    labels: np.ndarray
    image_hw: np.ndarray
    scale: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def widths(self) -> np.ndarray:
        return self.boxes[:, 2] - self.boxes[:, 0]

    @property
    def heights(self) -> np.ndarray:
        return self.boxes[:, 3] - self.boxes[:, 1]


def scaled_boxes(records: list[DetRecord], *, scales: list[int], max_size: int, crop: int = 0) -> ScaledBoxes:
    """The trainable boxes of `records` resized as training resizes them (DetectionDataset: shorter side to each
    of `scales`, longer side capped at `max_size`); ignored (crowd / difficult) boxes are left out. With `crop`
    (data.train_crop) the resize is the window's (crop x crop, or the image's side where smaller), image_hw too."""
    boxes, labels, image_hw, scale = [], [], [], []
    for rec in records:
        keep = ~rec.ignore
        if not keep.any():
            continue
        height, width = (min(rec.height, crop), min(rec.width, crop)) if crop else (rec.height, rec.width)
        for short in scales:
            factor = resize_factor(height, width, short, max_size)
            new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
            sy, sx = new_h / height, new_w / width
            boxes.append((rec.boxes[keep] - _window_origins(rec, keep, crop)) * np.array([sx, sy, sx, sy], np.float32))
            labels.append(rec.labels[keep])
            image_hw.append(np.tile([new_h, new_w], (int(keep.sum()), 1)))
            scale.append(np.full(int(keep.sum()), short))
    if not boxes:
        raise DataError("the dataset has no trainable boxes (all images empty or all boxes crowd/difficult)")
    return ScaledBoxes(np.concatenate(boxes).astype(np.float32), np.concatenate(labels).astype(np.int64),
                       np.concatenate(image_hw).astype(np.int64), np.concatenate(scale).astype(np.int64))


def _window_origins(rec: DetRecord, keep: np.ndarray, crop: int) -> np.ndarray:
    """[N, 4] (x0, y0, x0, y0) of a crop window holding each box's centre (zeros without crop), so that positions
    are the window's, as the model sees them (anchor coverage looks up each box's nearest grid point)."""
    if not crop:
        return np.zeros((int(keep.sum()), 4), np.float32)
    centre = (rec.boxes[keep, :2] + rec.boxes[keep, 2:]) / 2
    room = np.array([max(rec.width - crop, 0), max(rec.height - crop, 0)], np.float32)
    origin = np.minimum(np.floor(centre / crop) * crop, room)
    return np.concatenate([origin, origin], 1).astype(np.float32)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    q = np.percentile(values, [0, 1, 5, 25, 50, 75, 95, 99, 100])
    names = ["min", "p1", "p5", "p25", "median", "p75", "p95", "p99", "max"]
    return {name: round(float(v), 3) for name, v in zip(names, q)}


def dataset_summary(records: list[DetRecord], class_map: ClassMap, table: ScaledBoxes) -> dict:
    """Counts and distributions as one json-ready dict: images, boxes per class and per image, image sizes,
    box side sqrt(w*h) and aspect ratio h/w at the training scale."""
    per_image = np.array([r.num_trainable for r in records], np.int64)
    labels = np.concatenate([r.labels[~r.ignore] for r in records]) if records else np.zeros(0, np.int64)
    ignored = int(sum(int(r.ignore.sum()) for r in records))
    side = np.sqrt(np.maximum(table.widths * table.heights, 0.0))
    ratio = table.heights / np.maximum(table.widths, 1e-6)
    return {
        "images": len(records),
        "images_without_boxes": int((per_image == 0).sum()),
        "boxes": int(per_image.sum()),
        "boxes_ignored": ignored,
        "boxes_per_class": {name: int((labels == i + 1).sum()) for i, name in enumerate(class_map.names)},
        "boxes_per_image": {"mean": round(float(per_image.mean()), 3) if records else 0.0,
                            **_quantiles(per_image.astype(np.float64))},
        "image_width": _quantiles(np.array([r.width for r in records], np.float64)),
        "image_height": _quantiles(np.array([r.height for r in records], np.float64)),
        "train_scales": sorted({int(s) for s in table.scale}),
        "box_side_px_at_train_scale": _quantiles(side),
        "box_aspect_ratio_h_over_w": _quantiles(ratio),
    }


def _save_figure(fig, path: Path) -> None:
    """savefig through detres.io.atomic: never half a PNG under the real name."""
    with atomic_file(path, fix="check --out") as handle:
        fig.savefig(handle, format="png", dpi=100)


def write_histograms(records: list[DetRecord], table: ScaledBoxes, out_dir: Path,
                     anchor_sizes: list[float] | None = None) -> list[Path]:
    """box_sizes.png, aspect_ratios.png, boxes_per_image.png under `out_dir`; returns their paths.

    Sizes and ratios are on log axes (object sizes spread over orders of magnitude); the configured anchor sizes
    are drawn as vertical lines on the size histogram, so a gap between objects and anchors shows at a glance.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 20, 30, 100 rather than 2x10^1 on log axes

    out_dir.mkdir(parents=True, exist_ok=True)
    scales = ", ".join(str(s) for s in sorted({int(s) for s in table.scale}))
    side = np.sqrt(np.maximum(table.widths * table.heights, 1e-6))
    ratio = np.maximum(table.heights, 1e-6) / np.maximum(table.widths, 1e-6)
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(side, bins=np.geomspace(max(side.min(), 1.0), side.max() * 1.01 + 1e-6, 40), color="tab:blue")
    for i, size in enumerate(anchor_sizes or []):
        ax.axvline(size, color="tab:red", linestyle="--", label="anchor sizes" if i == 0 else None)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("box side sqrt(w*h) at the training scale (pixels, log scale)")
    ax.set_ylabel("boxes")
    ax.set_title(f"Box sizes at training scale {scales} ({len(table)} boxes)")
    if anchor_sizes:
        ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "box_sizes.png")
    _save_figure(fig, paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(ratio, bins=np.geomspace(ratio.min(), ratio.max() * 1.01 + 1e-6, 40), color="tab:green")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("aspect ratio h/w (log scale; 1 = square, 2 = twice as tall as wide)")
    ax.set_ylabel("boxes")
    ax.set_title(f"Box aspect ratios ({len(table)} boxes)")
    fig.tight_layout()
    paths.append(out_dir / "aspect_ratios.png")
    _save_figure(fig, paths[-1])
    plt.close(fig)

    per_image = np.array([r.num_trainable for r in records], np.int64)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(per_image, bins=np.arange(per_image.max() + 2) - 0.5, color="tab:purple")
    ax.set_xlabel("trainable boxes in the image (count)")
    ax.set_ylabel("images")
    ax.set_title(f"Boxes per image ({len(records)} images)")
    fig.tight_layout()
    paths.append(out_dir / "boxes_per_image.png")
    _save_figure(fig, paths[-1])
    plt.close(fig)
    return paths
