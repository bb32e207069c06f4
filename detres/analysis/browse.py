"""The dataset browser: ground truth drawn over the images (ignored / difficult boxes marked), optionally after
the training augmentation, as a page in the report's style."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from detres.analysis.html_page import esc, page, table, write_site
from detres.data.image_io import read_image_rgb
from detres.data.records import ClassMap, DetRecord
from detres.vis import _PALETTE

IGNORED_COLOUR = (150, 150, 150)


def draw_ground_truth(rgb: np.ndarray, boxes: np.ndarray, labels: np.ndarray, ignore: np.ndarray,
                      names: list[str], *, ignored_word: str = "ignored") -> np.ndarray:
    """A copy of the uint8 RGB image with each box in its class's colour and its name; ignored (crowd/difficult)
    boxes in grey, thin, tagged with `ignored_word`."""
    out = np.ascontiguousarray(rgb.copy())
    for box, label, ign in zip(boxes, labels, ignore):
        colour = IGNORED_COLOUR if ign else tuple(int(c) for c in _PALETTE[(int(label) - 1) % len(_PALETTE)])
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 1 if ign else 2)
        text = names[int(label) - 1] + (f" ({ignored_word})" if ign else "")
        cv2.putText(out, text, (x1 + 2, max(10, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return out


def unnormalize(image: torch.Tensor, pixel_mean: list[float], pixel_std: list[float]) -> np.ndarray:
    """A model input [3, H, W] ((x/255 - mean) / std, RGB) back to uint8 RGB [H, W, 3]."""
    mean = torch.tensor(pixel_mean)[:, None, None]
    std = torch.tensor(pixel_std)[:, None, None]
    rgb = ((image.float() * std + mean) * 255.0).clamp(0, 255).round().to(torch.uint8)
    return rgb.permute(1, 2, 0).contiguous().numpy()


def _upscale(rgb: np.ndarray, min_side: int = 320) -> tuple[np.ndarray, float]:
    scale = max(1.0, min_side / min(rgb.shape[:2]))
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR), scale


def browse(out_dir: str | Path, *, records: list[DetRecord] | None = None, dataset=None, class_map: ClassMap,
           max_images: int, ignored_word: str, title: str, pixel_mean: list[float] | None = None,
           pixel_std: list[float] | None = None) -> Path:
    """Write the browser page for the first `max_images` images: from `records` as stored, or from a detres
    DetectionDataset's items (what the model sees after its transform) un-normalized with pixel_mean/std."""
    count = min(max_images, len(dataset) if dataset is not None else len(records))
    names = class_map.names

    def build(tmp: Path) -> str:
        (tmp / "images").mkdir()
        cells, rows = [], []
        per_class = np.zeros(len(names), int)
        ignored = 0
        for i in range(count):
            if dataset is not None:
                image, target, meta = dataset[i]
                rgb = unnormalize(image, pixel_mean, pixel_std)
                boxes, labels = target["boxes"].numpy(), target["labels"].numpy()
                ign, image_id = target["ignore"].numpy(), meta["image_id"]
                note = f"scale {meta['scale'][0]:.2f}, {'flipped' if meta['flipped'] else 'not flipped'}"
            else:
                rec = records[i]
                rgb, boxes, labels, ign, image_id = read_image_rgb(rec.image_path), rec.boxes, rec.labels, \
                    rec.ignore, rec.image_id
                note = Path(rec.image_path).name
            big, scale = _upscale(rgb)
            drawn = draw_ground_truth(big, np.asarray(boxes) * scale, labels, ign, names, ignored_word=ignored_word)
            name = f"images/{i:04d}_{image_id}.jpg"
            cv2.imwrite(str(tmp / name), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            for lab, g in zip(labels, ign):
                per_class[int(lab) - 1] += int(not g)
                ignored += int(g)
            cells.append(f'<figure><img src="{esc(name)}" alt="image {image_id}"><figcaption>image {image_id}: '
                         f"{len(boxes)} boxes, {int(np.sum(ign))} {esc(ignored_word)}; {esc(note)}</figcaption>"
                         "</figure>")
        rows = [[n, int(c)] for n, c in zip(names, per_class)] + [[f"({ignored_word})", ignored]]
        summary = (f"<p>{count} images shown. Boxes in their class colour; {esc(ignored_word)} boxes thin and "
                   "grey.</p>" + table(["class", "boxes"], rows, table_id="per-class"))
        return page(title, [("summary", "Summary", summary),
                            ("images", "Images", '<div class="figs">' + "".join(cells) + "</div>")])

    return write_site(out_dir, build)
