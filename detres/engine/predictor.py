"""One way for tools to get a detector, whatever runs it: `build_predictor` reads test.backend and returns a
callable with the eager model's interface, `predictor(images) -> [dict(boxes, scores, labels)]`."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence

import torch
from torch import Tensor

from detres.cli.ckpt_config import config_for_checkpoint
from detres.config import Config, config_from_stored
from detres.data.records import ClassMap
from detres.deploy.artifact import read_export_info
from detres.deploy.export import check_exportable, export_detector
from detres.deploy.loader import BACKENDS, open_exported
from detres.engine.loading import load_detector
from detres.errors import ConfigError, UserError
from detres.modeling.detector import Detector, inference_options

log = logging.getLogger("detres.predictor")


class Predictor:
    """A detector for the tools: `predictor(images)` with images a list of [3, H, W] normalized tensors;
    `.class_map`, `.backend`; `.to(device)` / `.eval()` as on a module (the exported runtimes run on the CPU)."""

    def __init__(self, *, run, class_map: ClassMap, backend: str, keep: object = None) -> None:
        self._run = run
        self.class_map = class_map
        self.backend = backend
        self._keep = keep  # what must live as long as the predictor (a temporary export folder)

    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return self._run(images)

    def to(self, device) -> Predictor:
        if isinstance(self._run, torch.nn.Module):
            self._run.to(device)
        return self

    def eval(self) -> Predictor:
        return self


def build_predictor(cfg: Config, *, ckpts: Sequence[str] = (), model_dir: str | os.PathLike | None = None,
                    device: torch.device | None = None) -> Predictor:
    """The detector of `cfg.test.backend`: torch runs the checkpoints eagerly (several form an App. B ensemble) or a
    torch-export folder; onnxruntime/openvino run an export folder (`model_dir`) or export the one checkpoint on the
    fly into a temporary folder (int8 too, calibrated on deploy.calib_images training images)."""
    backend = cfg.test.backend
    if backend not in BACKENDS:
        raise ConfigError(f"test.backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    if bool(ckpts) == bool(model_dir):
        raise UserError("give either --ckpt (a checkpoint) or --model (a tools/export.py folder), not both or none")
    if ckpts and backend == "torch":
        loaded = [load_detector(path, cfg, optimize=True) for path in ckpts]
        detector = Detector([model for model, _, _ in loaded], inference_options(cfg))
        return Predictor(run=detector.to(device) if device is not None else detector, class_map=loaded[0][1],
                         backend=backend)
    keep = None
    if ckpts:
        check_exportable(cfg, num_models=len(ckpts))
        keep = tempfile.TemporaryDirectory(prefix="detres_export_")
        model, class_map, stored = load_detector(ckpts[0], cfg)
        stored.deploy = cfg.deploy
        calibration = _calibration(stored) if cfg.deploy.precision == "int8" else None
        log.info("exporting %s for test.backend=%s into a temporary folder ...", ckpts[0], backend)
        model_dir = export_detector(model, stored, class_map, keep.name, fmt="onnx", calibration=calibration)
    else:
        check_exportable(cfg)
    run, info = open_exported(model_dir, backend=backend, precision=cfg.deploy.precision, threads=cfg.deploy.threads)
    _check_same_input(cfg, info.input)
    return Predictor(run=run, class_map=info.class_map, backend=backend, keep=keep)


def _calibration(cfg: Config) -> list[Tensor]:
    from detres.data.detection import build_detection_dataset
    from detres.deploy.quantize import calibration_images

    backbone = cfg.model.backbone
    dataset = build_detection_dataset(cfg.data.train, input_cfg=cfg.data.input, pixel_mean=backbone.pixel_mean,
                                      pixel_std=backbone.pixel_std, train=False)
    return calibration_images(dataset, cfg.deploy.calib_images)


def _check_same_input(cfg: Config, expected: dict) -> None:
    """The tools normalize with cfg; an export made for another normalization would see wrong pixels."""
    ours = {"pixel_mean": list(cfg.model.backbone.pixel_mean), "pixel_std": list(cfg.model.backbone.pixel_std)}
    for key, value in ours.items():
        if [round(v, 6) for v in value] != [round(v, 6) for v in expected[key]]:
            raise ConfigError(f"model.backbone.{key}={value} differs from the export's {expected[key]}; use the "
                              "config the model was trained with")
    if (cfg.data.input.test_scale, cfg.data.input.max_size) != (expected["test_scale"], expected["max_size"]):
        log.warning("resizing to data.input.test_scale=%s max_size=%s; the model was exported with %s/%s",
                    cfg.data.input.test_scale, cfg.data.input.max_size, expected["test_scale"], expected["max_size"])


def config_for_predictor(cfg_path: str | None, *, ckpts: Sequence[str] = (), model_dir: str | os.PathLike | None = None,
                         overrides: list[str] | None = None) -> Config:
    """The config of a tool that runs a detector: --cfg when given, else the config stored in the first checkpoint
    or in the export folder's json (so `--model DIR` alone runs); KEY=VALUE overrides on top."""
    if model_dir and not cfg_path and not ckpts:
        info = read_export_info(model_dir)
        log.info("config: the one stored in %s (give --cfg FILE to use another)", info.folder)
        return config_from_stored(info.data["config"], overrides, where=f"config stored in {info.folder}")
    return config_for_checkpoint(cfg_path, ckpts[0] if ckpts else None, overrides)
