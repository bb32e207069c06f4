"""ImageNet DET (ILSVRC layout): VOC-style xml per image, 200 synsets named by wnid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detres.data.records import ClassMap, DetRecord, clip_and_filter
from detres.data.voc import parse_voc_xml
from detres.errors import DataError

DET_FOLDERS = ("train", "val")


def _folder_of(root: Path, stem: str, preferred: str) -> str:
    """The DET folder (train or val) holding <stem>.xml, the split's own folder first: a split may mix both
    (train_val1.txt from datasets/split_imagenet_val.py is train.txt followed by val1.txt)."""
    for folder in (preferred, *(f for f in DET_FOLDERS if f != preferred)):
        if (root / "Annotations" / "DET" / folder / f"{stem}.xml").is_file():
            return folder
    return preferred  # parse_voc_xml then names the missing file in the split's own folder


def read_imagenet_det(root: str | Path, split: str) -> tuple[list[DetRecord], ClassMap]:
    """Records of ROOT/ImageSets/DET/<split>.txt (first column: image path stem relative to Data/DET/<split
    folder>) with xml in ROOT/Annotations/DET/; classes from ROOT/devkit/data/map_det.txt if present
    (`wnid index name`), else the sorted wnids seen. ILSVRC xml boxes are 0-based inclusive pixel
    indices (as in CLS-LOC, detres.localization.data): x2 = xmax + 1. Each image is
    looked up in the split's folder (train for train*, else val), then in the other one."""
    root = Path(root)
    listing = root / "ImageSets" / "DET" / f"{split}.txt"
    if not listing.is_file():
        raise DataError(f"ImageNet DET image set not found: {listing}")
    stems = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    preferred = "train" if split.startswith("train") else "val"
    parsed = []
    for stem in stems:
        folder = _folder_of(root, stem, preferred)
        parsed.append((stem, folder, *parse_voc_xml(root / "Annotations" / "DET" / folder / f"{stem}.xml")))
    mapping = root / "devkit" / "data" / "map_det.txt"
    if mapping.is_file():
        rows = [line.split() for line in mapping.read_text().splitlines() if line.strip()]
        wnids, names = [r[0] for r in rows], [" ".join(r[2:]) or r[0] for r in rows]
    else:
        wnids = sorted({o[0] for *_, objs in parsed for o in objs})
        names = list(wnids)
    label_of = {w: i + 1 for i, w in enumerate(wnids)}
    records = []
    for index, (stem, folder, width, height, objects) in enumerate(parsed):
        unknown = [o[0] for o in objects if o[0] not in label_of]
        if unknown:
            raise DataError(f"{stem}.xml: unknown synset {unknown[0]!r} (not in {mapping})")
        raw = np.array([o[1] for o in objects], np.float32).reshape(-1, 4)
        raw[:, 2:] += 1.0  # 0-based inclusive pixel indices -> continuous corners (the devkit's widths are x2-x1+1)
        boxes, keep = clip_and_filter(raw, width, height)
        records.append(DetRecord(image_path=str(root / "Data" / "DET" / folder / f"{stem}.JPEG"), image_id=index,
                                 width=width, height=height, boxes=boxes[keep],
                                 labels=np.array([label_of[o[0]] for o in objects], np.int64)[keep],
                                 ignore=np.zeros(int(keep.sum()), bool)))
    return records, ClassMap(names=names, dataset_ids=wnids)
