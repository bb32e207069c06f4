"""Detections of a folder of images in the formats other tools read: COCO results, CSV, PASCAL VOC xml, Label
Studio tasks.

Input is infer's report (`{relative image path: [{"box": [x1, y1, x2, y2], "score", "label": class name}]}`,
boxes XYXY in the image's pixels) with each image's id and size, and the categories (dataset id, name). Every
file is written atomically. The json format is infer's own detections.json, written by the tool itself.

- coco: `detections_coco.json`, a results list `[{image_id, category_id, bbox [x, y, w, h], score}]` for
  pycocotools' loadRes and `detres eval`; without a ground truth to take image ids from, also
  `detections_coco_images.json`, a COCO file with the images (id, file_name, width, height) and categories;
- csv: `detections.csv`, one row per detection: image, class, score, x1, y1, x2, y2;
- voc: `voc/Annotations/<image>.xml` (VOC layout: filename, size, objects with 1-based pixel boxes),
  `voc/ImageSets/Main/default.txt` and `voc/classes.txt`: labelImg (open the image folder, change the save dir
  to voc/Annotations) and CVAT (import as "PASCAL VOC") read them as pre-annotations, and detres's VOC reader
  reads them as ground truth;
- labelstudio: `detections_labelstudio.json`, Label Studio tasks with `predictions` (its documented import format
  for pre-annotations, docs/source/guide/predictions.md in HumanSignal/label-studio): per image one task whose
  `data.image` is `/data/local-files/?d=<relative path>` (Label Studio's local-files storage with the input
  folder as its document root) and one prediction, `model_version` the model's name, whose `rectanglelabels`
  results give x, y, width and height in percent of the image (`original_width`, `original_height` in pixels).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from xml.etree import ElementTree as ET

from detres.errors import UserError
from detres.io.atomic import write_atomic

FORMATS = ("json", "coco", "csv", "voc", "labelstudio")
COCO_RESULTS, COCO_IMAGES, CSV_FILE, VOC_DIR = "detections_coco.json", "detections_coco_images.json", \
    "detections.csv", "voc"
LABELSTUDIO_FILE = "detections_labelstudio.json"
LABELSTUDIO_FROM, LABELSTUDIO_TO = "label", "image"  # the names of <RectangleLabels> and <Image> in the config
VOC_SET = "default"  # the image-set name CVAT gives an import without subsets


@dataclass(frozen=True)
class ImageEntry:
    """One image: its path relative to the input folder (posix), its dataset id, its upright size in pixels."""

    file_name: str
    image_id: int
    width: int
    height: int


Detections = dict[str, list[dict]]  # relative path -> [{"box": [x1, y1, x2, y2], "score": s, "label": name}]


def coco_results(detections: Detections, images: list[ImageEntry], categories: list[tuple[int, str]]) -> list[dict]:
    """The COCO results list: XYXY -> [x, y, w, h], class name -> category id, path -> image id."""
    category_of = {name: cat for cat, name in categories}
    out = []
    for entry in images:
        for det in detections.get(entry.file_name, []):
            x1, y1, x2, y2 = (float(v) for v in det["box"])
            out.append({"image_id": entry.image_id, "category_id": category_of[det["label"]],
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(det["score"])})
    return out


def coco_images(images: list[ImageEntry], categories: list[tuple[int, str]]) -> dict:
    """A COCO ground-truth file without annotations: the images the results' ids refer to, and the categories."""
    return {"images": [{"id": e.image_id, "file_name": e.file_name, "width": e.width, "height": e.height}
                       for e in images],
            "annotations": [], "categories": [{"id": cat, "name": name} for cat, name in categories]}


def csv_text(detections: Detections, images: list[ImageEntry]) -> str:
    """One header row, then one row per detection: image, class, score, x1, y1, x2, y2 (pixels, XYXY)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "class", "score", "x1", "y1", "x2", "y2"])
    for entry in images:
        for det in detections.get(entry.file_name, []):
            writer.writerow([entry.file_name, det["label"], det["score"], *det["box"]])
    return buffer.getvalue()


def voc_stems(file_names: list[str]) -> dict[str, str]:
    """The xml name (without .xml, subfolders kept) of each image: its path without the extension, or with the
    extension folded in (`x_png`) when two images differ only by extension or case."""
    plain = {name: str(PurePosixPath(name).with_suffix("")) for name in file_names}
    counts: dict[str, int] = {}
    for stem in plain.values():
        counts[stem.casefold()] = counts.get(stem.casefold(), 0) + 1
    return {name: stem if counts[stem.casefold()] == 1 else f"{stem}_{PurePosixPath(name).suffix.lstrip('.')}"
            for name, stem in plain.items()}


def _voc_box(box: list[float], width: int, height: int) -> list[int]:
    """XYXY continuous pixels -> VOC's 1-based inclusive integer pixels (detres's VOC reader inverts this)."""
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    xmin, ymin = min(max(x1 + 1, 1), width), min(max(y1 + 1, 1), height)
    return [xmin, ymin, min(max(x2, xmin), width), min(max(y2, ymin), height)]


def voc_xml(entry: ImageEntry, objects: list[dict]) -> str:
    """The VOC annotation of one image, as labelImg writes it (plus each object's <score>, which readers skip)."""
    path = PurePosixPath(entry.file_name)
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = str(path.parent) if str(path.parent) != "." else ""
    ET.SubElement(root, "filename").text = path.name
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "detres"
    size = ET.SubElement(root, "size")
    for key, value in (("width", entry.width), ("height", entry.height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for det in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = det["label"]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        ET.SubElement(obj, "score").text = f"{float(det['score']):.4f}"
        box = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), _voc_box(det["box"], entry.width, entry.height)):
            ET.SubElement(box, key).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_voc(folder: Path, detections: Detections, images: list[ImageEntry], class_names: list[str]) -> Path:
    """folder/{Annotations/*.xml, ImageSets/Main/default.txt, classes.txt}; returns `folder`."""
    stems = voc_stems([e.file_name for e in images])
    for entry in images:
        write_atomic(folder / "Annotations" / f"{stems[entry.file_name]}.xml",
                     voc_xml(entry, detections.get(entry.file_name, [])))
    write_atomic(folder / "ImageSets" / "Main" / f"{VOC_SET}.txt", "".join(f"{stems[e.file_name]}\n" for e in images))
    write_atomic(folder / "classes.txt", "".join(f"{name}\n" for name in class_names))
    return folder


def labelstudio_tasks(detections: Detections, images: list[ImageEntry], model_name: str) -> list[dict]:
    """One Label Studio task per image, its detections as one prediction of `model_name`: rectanglelabels
    results with the top-left corner, width and height in percent of the image's width and height."""
    tasks = []
    for entry in images:
        results = []
        for k, det in enumerate(detections.get(entry.file_name, [])):
            x1, y1, x2, y2 = (float(v) for v in det["box"])
            results.append({
                "id": f"{entry.image_id}_{k}", "type": "rectanglelabels", "from_name": LABELSTUDIO_FROM,
                "to_name": LABELSTUDIO_TO, "original_width": entry.width, "original_height": entry.height,
                "image_rotation": 0, "score": float(det["score"]),
                "value": {"x": 100.0 * x1 / entry.width, "y": 100.0 * y1 / entry.height,
                          "width": 100.0 * (x2 - x1) / entry.width, "height": 100.0 * (y2 - y1) / entry.height,
                          "rotation": 0, "rectanglelabels": [det["label"]]}})
        # the prediction's score orders tasks in Label Studio's data manager: the mean of its detections' scores
        score = sum(r["score"] for r in results) / len(results) if results else 0.0
        tasks.append({"data": {"image": f"/data/local-files/?d={entry.file_name}"},
                      "predictions": [{"model_version": model_name, "score": score, "result": results}]})
    return tasks


def write_detections(fmt: str, output_dir: str | os.PathLike, detections: Detections, images: list[ImageEntry],
                     categories: list[tuple[int, str]], *, with_images_file: bool = True,
                     model_name: str = "detres") -> list[Path]:
    """Write `detections` in `fmt` (one of FORMATS) under `output_dir`; the paths written ([] for json, whose
    file the tool writes). with_images_file: coco only, also write the images list the ids refer to;
    model_name: labelstudio only, the predictions' model_version."""
    output_dir = Path(output_dir)
    if fmt == "json":
        return []
    if fmt == "coco":
        paths = [write_atomic(output_dir / COCO_RESULTS, json.dumps(coco_results(detections, images, categories)))]
        if with_images_file:
            paths.append(write_atomic(output_dir / COCO_IMAGES, json.dumps(coco_images(images, categories))))
        return paths
    if fmt == "csv":
        return [write_atomic(output_dir / CSV_FILE, csv_text(detections, images))]
    if fmt == "voc":
        return [write_voc(output_dir / VOC_DIR, detections, images, [name for _, name in categories])]
    if fmt == "labelstudio":
        return [write_atomic(output_dir / LABELSTUDIO_FILE,
                             json.dumps(labelstudio_tasks(detections, images, model_name), indent=1))]
    raise UserError(f"unknown detections format {fmt!r}; choose one of {', '.join(FORMATS)}")
