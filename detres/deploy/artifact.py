"""The export folder: the artifact(s) and `detres_export.json`, which holds everything a runtime needs.

A runtime reads only the folder: the config, the class names, the input normalization and resize, the
artifact's name and format, and the versions that wrote it. `read_export_info` refuses a folder it cannot
trust (json missing, written by another detres or another artifact format version, file missing).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import detres
from detres.config import Config, config_to_dict
from detres.data.records import ClassMap
from detres.deploy.option_policy import baked_values
from detres.errors import UserError
from detres.io.atomic import write_atomic

INFO_FILE = "detres_export.json"
# bump when the graph's inputs/outputs or this json change meaning (2: the baked options; 3: `int8` replaces
# `int8_artifact`: the quantizer, its settings and the measured fp32/int8 mAP)
FORMAT_VERSION = 3
FORMATS = {"onnx": "model.onnx"}


@dataclass
class ExportInfo:
    """The parsed json of an export folder."""

    folder: Path
    data: dict[str, Any]

    @property
    def format(self) -> str:
        return self.data["format"]

    @property
    def artifact(self) -> Path:
        return self.folder / self.data["artifact"]

    @property
    def int8(self) -> dict[str, Any] | None:
        """The int8 model's record: {"artifact", "quantizer", "settings", "calibration_images", "accuracy"} or None.
        accuracy: {"runtime", "images", "fp32": {"map50", "map"}, "int8": {...}} in percent (images: what it was
        measured on, detres.deploy.int8_data), or None when there was no ground truth to measure on."""
        return self.data.get("int8")

    @property
    def int8_artifact(self) -> Path | None:
        return self.folder / self.int8["artifact"] if self.int8 else None

    @property
    def class_map(self) -> ClassMap:
        return ClassMap.from_dict(self.data["class_map"])

    @property
    def input(self) -> dict[str, Any]:
        return self.data["input"]

    @property
    def baked(self) -> dict[str, Any]:
        """{option key: value} of the test-time options fixed into the graph at export (detres.deploy.option_policy)."""
        return self.data["baked"]


def versions() -> dict[str, str]:
    """Versions of the exporter and runtime packages present (absent ones are left out)."""
    import importlib.metadata as md

    found = {}
    for name in ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return found


def build_info(cfg: Config, class_map: ClassMap, fmt: str) -> dict[str, Any]:
    """The json of a new export of `cfg`'s detector in format `fmt`."""
    inp = cfg.data.input
    return {
        "detres_version": detres.__version__,
        "format_version": FORMAT_VERSION,
        "format": fmt,
        "artifact": FORMATS[fmt],
        "int8": None,
        "opset": cfg.deploy.opset if fmt == "onnx" else None,
        "versions": versions(),
        "class_map": class_map.to_dict(),
        "class_names": list(class_map.names),
        "input": {"name": "image", "shape": [1, 3, "H", "W"], "dtype": "float32", "channels": 3, "color": "RGB",
                  "pixel_mean": list(cfg.model.backbone.pixel_mean), "pixel_std": list(cfg.model.backbone.pixel_std),
                  "pixel_range": "[0, 1] before normalization", "test_scale": inp.test_scale,
                  "max_size": inp.max_size, "size_divisibility": inp.size_divisibility,
                  "resize": "shorter side to test_scale, longer side at most max_size, bilinear (OpenCV)"},
        "outputs": {"boxes": "[K, 4] float32 XYXY pixels of the input tensor", "scores": "[K] float32",
                    "labels": "[K] int64 in 1..C (class_names[label - 1])"},
        "baked": baked_values(cfg),
        "config": config_to_dict(cfg),
    }


def write_info(folder: Path, info: dict[str, Any]) -> Path:
    """Write the json atomically (temporary file, then rename), readable by the other users of a model folder."""
    path = write_atomic(folder / INFO_FILE, json.dumps(info, indent=1))
    path.chmod(0o644)
    return path


def read_export_info(folder: str | os.PathLike) -> ExportInfo:
    """The export folder's json, checked; UserError naming what is wrong and what was expected."""
    folder = Path(folder)
    path = folder / INFO_FILE
    if not folder.is_dir():
        raise UserError(f"--model {folder} is not a folder; give the --out folder of tools/export.py")
    if not path.is_file():
        raise UserError(f"{folder} has no {INFO_FILE}; expected the --out folder of tools/export.py "
                        "(the json beside the artifact says how to run it)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not readable json ({exc}); export the model again") from None
    if data.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: artifact format version {data.get('format_version')!r}, this detres reads "
                        f"version {FORMAT_VERSION}; export the model again with this detres")
    if data.get("detres_version") != detres.__version__:
        raise UserError(f"{path}: exported by detres {data.get('detres_version')!r}, this is detres "
                        f"{detres.__version__}; export the model again with this detres")
    if data.get("format") not in FORMATS:
        raise UserError(f"{path}: unknown format {data.get('format')!r}; expected one of {', '.join(FORMATS)}")
    info = ExportInfo(folder=folder, data=data)
    if not info.artifact.is_file():
        raise UserError(f"{folder}: {data['artifact']} is missing (named by {INFO_FILE}); export the model again")
    return info
