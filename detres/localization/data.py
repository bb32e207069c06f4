"""ImageNet CLS-LOC reader (the layout is in docs/localization.md) and the per-class RPN's training crops.

Records carry the image's class and its boxes, converted once here from ILSVRC's inclusive 0-based pixel
indices to continuous XYXY (x2 = xmax + 1).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from defusedxml import ElementTree
from torch.utils.data import Dataset

from detres.data.image_io import read_image_rgb
from detres.data.records import ClassMap
from detres.errors import DataError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
SYNSET_FILE = "LOC_synset_mapping.txt"


@dataclass
class LocRecord:
    """One image: its class (contiguous 1..C) and its boxes [N, 4] XYXY float32 (N = 0: classification only)."""

    image_path: str
    image_id: int
    label: int
    boxes: np.ndarray


def read_class_map(root: str | Path) -> ClassMap:
    """The classes in synset order: from LOC_synset_mapping.txt (in root or its parent), else sorted wnids.

    Line format: `<wnid> <human-readable name>`; names[i] / dataset_ids[i] are contiguous label i+1.
    """
    root = Path(root)
    for mapping in (root / SYNSET_FILE, root.parent / SYNSET_FILE):
        if mapping.is_file():
            wnids, names = [], []
            for n, line in enumerate(mapping.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                wnid, _, name = line.strip().partition(" ")
                if wnid in wnids:
                    raise DataError(f"{mapping}:{n}: synset {wnid} listed twice; each line is '<wnid> <name>'")
                wnids.append(wnid)
                names.append(name.strip() or wnid)
            if not wnids:
                raise DataError(f"{mapping} lists no synsets; each line is '<wnid> <name>'")
            return ClassMap(names=names, dataset_ids=wnids)
    train = root / "Data" / "CLS-LOC" / "train"
    wnids = sorted(p.name for p in train.iterdir() if p.is_dir()) if train.is_dir() else []
    if not wnids:
        raise DataError(f"no class list under {root}: expected {root / SYNSET_FILE} or synset folders in {train}")
    return ClassMap(names=list(wnids), dataset_ids=list(wnids))


def parse_loc_xml(path: str | Path) -> tuple[list[str], np.ndarray]:
    """One ILSVRC xml -> (object wnids, boxes [N, 4] float32 continuous XYXY); DataError for a broken file."""
    path = Path(path)
    try:
        root = ElementTree.parse(str(path)).getroot()
    except Exception as exc:  # defusedxml raises ParseError and its own security errors
        raise DataError(f"{path}: not a readable annotation xml ({exc}); fix or delete the file") from None
    names, boxes = [], []
    for obj in root.iter("object"):
        name, bb = obj.findtext("name"), obj.find("bndbox")
        if not name or bb is None:
            raise DataError(f"{path}: an <object> lacks <name> or <bndbox>")
        try:
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise DataError(f"{path}: object {name} has a missing or non-numeric bndbox coordinate") from None
        # ILSVRC boxes are inclusive pixel indices: the object covers columns xmin..xmax.
        box = [x1, y1, x2 + 1.0, y2 + 1.0]
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DataError(f"{path}: object {name} has a degenerate box {x1, y1, x2, y2} (xmax < xmin or "
                            "ymax < ymin); fix the annotation")
        names.append(name.strip())
        boxes.append(box)
    return names, np.asarray(boxes, np.float32).reshape(-1, 4)


def read_loc_split(root: str | Path, split: str) -> tuple[list[LocRecord], ClassMap]:
    """Read `train` (Data/CLS-LOC/train/<wnid>/*) or `val` (Data/CLS-LOC/val/* with an xml each) under root.

    Training images without xml are kept with empty boxes (classification only); validation images
    without xml are skipped, since their class is only known from the xml.
    """
    root = Path(root)
    if split not in ("train", "val"):
        raise DataError(f"imagenet_loc split must be 'train' or 'val', got {split!r}")
    class_map = read_class_map(root)
    index = {wnid: i + 1 for i, wnid in enumerate(class_map.dataset_ids)}
    images = root / "Data" / "CLS-LOC" / split
    anns = root / "Annotations" / "CLS-LOC" / split
    if not images.is_dir():
        raise DataError(f"image folder not found: {images} (expected the ILSVRC CLS-LOC layout, "
                        "see docs/localization.md)")
    records: list[LocRecord] = []
    if split == "train":
        for wnid in class_map.dataset_ids:
            for img in sorted(_images_in(images / wnid)):
                xml = anns / wnid / (img.stem + ".xml")
                boxes = np.zeros((0, 4), np.float32)
                if xml.is_file():
                    names, boxes = parse_loc_xml(xml)
                    boxes = boxes[[n == wnid for n in names]]  # a box of another synset is not this image's
                records.append(LocRecord(str(img), len(records), index[wnid], boxes))
    else:
        for img in sorted(_images_in(images)):
            xml = anns / (img.stem + ".xml")
            if not xml.is_file():
                continue
            names, boxes = parse_loc_xml(xml)
            if not names:
                continue
            unknown = [n for n in names if n not in index]
            if unknown:
                raise DataError(f"{xml}: synset {unknown[0]} is not in the class list of {root}")
            # A CLS-LOC image has one class; its first object names it, the other objects' boxes must agree.
            label = index[names[0]]
            keep = np.array([index[n] == label for n in names])
            records.append(LocRecord(str(img), len(records), label, boxes[keep]))
    if not records:
        raise DataError(f"no usable images in {images} (with annotations in {anns})")
    return records, class_map


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]


def normalize(rgb: np.ndarray, pixel_mean: list[float], pixel_std: list[float]) -> torch.Tensor:
    """uint8 [H, W, 3] RGB -> float32 [3, H, W], (x/255 - mean) / std."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(pixel_mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(pixel_std, dtype=torch.float32)[:, None, None]
    return (x - mean) / std


def resize_shorter(rgb: np.ndarray, short: int, max_size: int = 0) -> tuple[np.ndarray, float]:
    """Resize so the shorter side is `short` (longer side capped at max_size if > 0); returns (image, scale)."""
    h, w = rgb.shape[:2]
    scale = short / min(h, w)
    if max_size > 0 and scale * max(h, w) > max_size:
        scale = max_size / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return rgb, 1.0
    return cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR), scale


def center_crop_window(height: int, width: int, crop: int) -> tuple[int, int]:
    """(x0, y0) of the centered crop x crop window in a height x width image."""
    return (width - crop) // 2, (height - crop) // 2


class LocCropDataset(Dataset):
    """Training crops for the per-class RPN (Sec. 3.4 augmentation): shorter side random in resize_range,
    a random crop_size x crop_size crop, random horizontal flip.

    Item: (image [3, S, S] float32 normalized, boxes [N, 4] XYXY crop pixels (clipped, may be empty when the
    crop misses the object), label int 1..C).
    """

    def __init__(self, records: list[LocRecord], *, crop_size: int, resize_range: tuple[int, int], flip: bool,
                 pixel_mean: list[float], pixel_std: list[float], max_pixels: int = 100_000_000) -> None:
        self.records = [r for r in records if len(r.boxes)]  # images without boxes cannot train localization
        if not self.records:
            raise DataError("no training image has a bounding box; the per-class RPN needs annotated images")
        self.crop_size, self.resize_range, self.flip = crop_size, tuple(resize_range), flip
        self.pixel_mean, self.pixel_std, self.max_pixels = pixel_mean, pixel_std, max_pixels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        rec = self.records[i]
        rgb = read_image_rgb(rec.image_path, max_pixels=self.max_pixels)
        short = random.randint(self.resize_range[0], self.resize_range[1])
        rgb, scale = resize_shorter(rgb, max(short, self.crop_size))
        h, w = rgb.shape[:2]
        s = self.crop_size
        x0, y0 = random.randint(0, w - s), random.randint(0, h - s)
        crop = rgb[y0:y0 + s, x0:x0 + s]
        boxes = rec.boxes * scale - np.array([x0, y0, x0, y0], np.float32)
        boxes = np.clip(boxes, 0, s)
        boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)]
        if self.flip and random.random() < 0.5:
            crop = crop[:, ::-1]
            boxes = np.stack([s - boxes[:, 2], boxes[:, 1], s - boxes[:, 0], boxes[:, 3]], axis=1)
        image = normalize(crop, self.pixel_mean, self.pixel_std)
        return image, torch.from_numpy(np.ascontiguousarray(boxes, np.float32)).reshape(-1, 4), rec.label


def collate_crops(batch: list) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Stack same-size crops; boxes stay a list (a different count per image)."""
    images, boxes, labels = zip(*batch)
    return torch.stack(images), list(boxes), torch.tensor(labels, dtype=torch.int64)
