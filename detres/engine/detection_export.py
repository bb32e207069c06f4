"""infer's report in another format (`--format coco|csv|voc|labelstudio`): image ids, sizes and categories, then
the writers of detres/io/detection_formats.py."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from detres.data.coco import load_coco_json
from detres.data.image_io import image_size
from detres.data.records import ClassMap
from detres.errors import DataError, UserError
from detres.evaluation.coco import category_ids
from detres.io.detection_formats import ImageEntry, write_detections


def coco_image_ids(ann_file: Path, file_names: list[str]) -> dict[str, int]:
    """{relative path: image id} from a COCO annotation file's images, matched by file_name: the whole relative
    path, else its base name when that is unique in the file. DataError naming an image the file lacks."""
    images = load_coco_json(ann_file)["images"]
    by_path = {str(PurePosixPath(img["file_name"])): int(img["id"]) for img in images}
    by_base: dict[str, list[int]] = {}
    for img in images:
        by_base.setdefault(PurePosixPath(img["file_name"]).name, []).append(int(img["id"]))
    ids = {}
    for name in file_names:
        if name in by_path:
            ids[name] = by_path[name]
        elif len(by_base.get(PurePosixPath(name).name, [])) == 1:
            ids[name] = by_base[PurePosixPath(name).name][0]
        else:
            raise DataError(f"--gt {ann_file} lists no image with file_name {name!r}; give --input the image folder "
                            "of that annotation file, or leave --gt out (ids 1..N in sorted file order)")
    return ids


def export_detections(report: dict, fmt: str, output_dir: Path, *, input_dir: Path, class_map: ClassMap,
                      gt: Path | None = None, model_name: str = "detres") -> list[Path]:
    """Write infer's `report["detections"]` in `fmt` under `output_dir`; returns the paths written.

    Image ids: from the COCO annotation file `gt` (coco only), else 1..N over the images in sorted path order.
    Categories: the dataset ids the model was trained with (COCO ids), or 1..C for VOC-style class maps.
    model_name: the name Label Studio shows for the predictions (labelstudio).
    """
    if gt is not None and fmt != "coco":
        raise UserError(f"--gt is read by --format coco only (got --format {fmt})")
    if fmt == "json":
        return []
    detections = report["detections"]
    names = sorted(detections)
    ids = coco_image_ids(gt, names) if gt is not None else {name: i + 1 for i, name in enumerate(names)}
    images = [ImageEntry(name, ids[name], *image_size(input_dir / name)) for name in names]
    categories = list(zip(category_ids(class_map), class_map.names))
    return write_detections(fmt, output_dir, detections, images, categories, with_images_file=gt is None,
                            model_name=model_name)
