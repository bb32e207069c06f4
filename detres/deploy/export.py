"""Export a trained detector to a folder: ONNX (any image size, batch 1) plus the json.

What the graph holds and what is refused is the options policy (detres.deploy.option_policy, shown in
docs/deploy.md); `check_exportable` applies it. torch.export's .pt2 is not offered: its program asserts at run time
that at least 2 candidate detections pass the score threshold (it specializes the sizes 0 and 1 away), so an image
with 0 or 1 candidate would crash.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from detres.config import Config
from detres.data.records import ClassMap
from detres.deploy.artifact import FORMATS, INFO_FILE, build_info, write_info
from detres.deploy.graph import ExportableDetector, exportable_module
from detres.deploy.inputs import MAX_SIDE, MIN_SIDE
from detres.deploy.int8_data import MeasureSet
from detres.deploy.option_policy import check_options
from detres.deploy.quantize import resolve_quantizer
from detres.errors import ConfigError, UserError
from detres.modeling.faster_rcnn import FasterRCNN

log = logging.getLogger("detres.deploy")

EXPORT_FORMAT = "onnx"  # what build_predictor exports a checkpoint to for an exported runtime
MIN_OPSET = 16  # ONNX RoiAlign gained coordinate_transformation_mode=half_pixel (aligned=True) in opset 16


def check_exportable(cfg: Config, *, num_models: int = 1) -> None:
    """ConfigError naming the first option that the exported graph does not compute (detres.deploy.option_policy),
    or an opset without half-pixel RoIAlign."""
    check_options(cfg, backend="export", num_models=num_models)
    if cfg.deploy.opset < MIN_OPSET:
        raise ConfigError(f"deploy.opset={cfg.deploy.opset}: below {MIN_OPSET} ONNX RoiAlign has no half-pixel "
                          f"alignment, so aligned=True would not be what runs; use deploy.opset >= {MIN_OPSET}")


def _sample(cfg: Config) -> Tensor:
    # distinct height and width, so the tracer cannot take them for one symbol
    side = max(cfg.data.input.test_scale, 64)
    return torch.zeros(1, 3, side, side * 4 // 3 + 8)


def _dynamic_shapes() -> dict:
    height = torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE)
    width = torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)
    return {"image": {2: height, 3: width}}


def export_onnx(module: ExportableDetector, path: Path, *, sample: Tensor, opset: int) -> None:
    """The whole detector as one ONNX file with dynamic H and W (torch.onnx's dynamo exporter)."""
    from detres.deploy.onnx_ops import CUSTOM_TRANSLATIONS

    with torch.no_grad():
        program = torch.onnx.export(module, (sample,), input_names=["image"],
                                    output_names=["boxes", "scores", "labels"], dynamic_shapes=_dynamic_shapes(),
                                    opset_version=opset, dynamo=True, verbose=False,
                                    custom_translation_table=CUSTOM_TRANSLATIONS)
    program.save(str(path))


def export_detector(model: FasterRCNN, cfg: Config, class_map: ClassMap, out_dir: str | os.PathLike, *, fmt: str,
                    calibration: Sequence[Tensor] | None = None, measure: MeasureSet | None = None) -> Path:
    """Write the artifact and its json into `out_dir`; with `calibration` images ([3, H, W] normalized) also the
    int8 model of deploy.int8_quantizer (detres.deploy.quantize), and with annotated images to `measure` on
    (detres.deploy.int8_data) the fp32 and int8 mAP on them, in the json. The json is written last and removed
    first: a folder left by an interrupted export has none, and runtimes refuse it."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    check_exportable(cfg)
    resolve_quantizer(cfg.deploy.int8_quantizer, cfg.test.backend)  # a wrong name fails before the export
    if calibration is not None and len(calibration) == 0:
        raise UserError("int8 calibration got 0 images; give --calib N with N >= 1 and a training set with images")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / INFO_FILE).unlink(missing_ok=True)
    info = build_info(cfg, class_map, fmt)
    module = exportable_module(model)
    target = out / FORMATS[fmt]
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=out)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o644)  # mkstemp's 0600 would keep the artifact from other users of a shared model folder
    try:
        export_onnx(module, tmp, sample=_sample(cfg), opset=cfg.deploy.opset)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if calibration is not None:
        from detres.deploy.int8_search import search_int8  # NNCF / ONNX Runtime's quantizer: only when asked

        info["int8"] = search_int8(target, calibration, measure, out, info, cfg.deploy, cfg.test.backend)
    write_info(out, info)
    log.info("exported %s to %s", fmt, out)
    return out

