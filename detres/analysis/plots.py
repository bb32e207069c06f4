"""The report's figures (matplotlib, Agg), each written as PNG (for the page) and SVG (for print), titled, with
labelled axes and units."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from detres.analysis.coco_errors import KINDS  # noqa: E402

RECALLS = np.linspace(0.0, 1.0, 101)  # COCOeval's recall points
RECALL_LABEL = "recall (fraction of objects found)"
PRECISION_LABEL = "precision (fraction of detections correct)"


def save(fig, out_dir: Path, name: str) -> str:
    """Write fig as name.png and name.svg under out_dir; returns the PNG's file name (relative link)."""
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out_dir / f"{name}.{ext}", dpi=100)
    plt.close(fig)
    return f"{name}.png"


def pr_curves(curves: dict[str, np.ndarray], title: str, out_dir: Path, name: str) -> str:
    """Interpolated PR curves (COCOeval's 101 recall points), one line per label with its AP in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for label, precision in curves.items():
        if not np.isnan(precision).all():
            ax.plot(RECALLS, precision, label=f"{label} (AP {100 * np.nanmean(precision):.1f})")
    ax.set(title=title, xlabel=RECALL_LABEL, ylabel=PRECISION_LABEL, xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return save(fig, out_dir, name)


def score_curves(thresholds, precision, recall, f1, best: float, title: str, out_dir: Path, name: str) -> str:
    """Precision, recall and F1 of the detections at or above each score threshold; the best-F1 one marked."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.plot(thresholds, precision, label="precision")
    ax.plot(thresholds, recall, label="recall")
    ax.plot(thresholds, f1, label="F1", linewidth=2)
    if np.isfinite(best):
        ax.axvline(best, color="k", linestyle="--", linewidth=1, label=f"best F1 at {best:.3f}")
    ax.set(title=title, xlabel="score threshold (detection confidence, 0-1)", ylabel="fraction (0-1)",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return save(fig, out_dir, name)


def hoiem_areas(curves: np.ndarray, title: str, out_dir: Path, name: str) -> str:
    """The seven stacked PR areas of the classic COCO analysis, the area of each in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    colours = ["#1f4e89", "#6fb1e4", "#33a02c", "#6a3d9a", "#cab2d6", "#fdbf6f", "#e31a1c"]
    below = np.zeros(101)
    for i, kind in enumerate(KINDS):
        curve = np.nan_to_num(curves[i])
        ax.fill_between(RECALLS, below, curve, color=colours[i], label=f"[{np.mean(curve):.3f}] {kind}",
                        edgecolor="#555555", linewidth=0.3)
        below = np.maximum(below, curve)
    ax.set(title=title, xlabel=RECALL_LABEL, ylabel=PRECISION_LABEL, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower left")
    return save(fig, out_dir, name)


def bars(values: dict[str, float], title: str, ylabel: str, out_dir: Path, name: str, *, xlabel: str = "") -> str:
    """One bar per key (NaN drawn as a gap), its value written above."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    keys = list(values)
    heights = [0.0 if not np.isfinite(values[k]) else values[k] for k in keys]
    ax.bar(range(len(keys)), heights, color="#3a75b0")
    for i, k in enumerate(keys):
        ax.text(i, heights[i], "n/a" if not np.isfinite(values[k]) else f"{values[k]:.1f}", ha="center",
                va="bottom", fontsize=8)
    ax.set_xticks(range(len(keys)), keys, rotation=20, ha="right", fontsize=8)
    ax.set(title=title, ylabel=ylabel, xlabel=xlabel)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, out_dir, name)


def confusion(matrix: np.ndarray, names: list[str], title: str, out_dir: Path, name: str) -> str:
    """Counts as a heat map: rows the true class, columns the predicted class, background last in both."""
    size = max(4.5, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(np.log1p(matrix), cmap="Blues")
    if len(names) <= 30:
        for (i, j), v in np.ndenumerate(matrix):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set(title=title, xlabel="predicted class (count of detections)", ylabel="true class (count of objects)")
    return save(fig, out_dir, name)
