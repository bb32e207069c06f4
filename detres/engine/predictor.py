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
from detres.deploy.export import EXPORT_FORMAT, export_detector
from detres.deploy.int8_data import int8_data
from detres.deploy.loader import BACKENDS, check_runtime, open_exported
from detres.deploy.option_policy import baked_values, check_baked, check_options
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

    @property
    def images_per_call(self) -> int:
        """How many images a caller with many should hand over at once: the runtime's own number (OpenVINO's
        parallel requests under the throughput hint), 1 for the eager model (a padded batch changes detections)."""
        return 1 if isinstance(self._run, torch.nn.Module) else int(getattr(self._run, "images_per_call", 1))

    def to(self, device) -> Predictor:
        if isinstance(self._run, torch.nn.Module):
            self._run.to(device)
        return self

    def eval(self) -> Predictor:
        return self


def build_predictor(cfg: Config, *, ckpts: Sequence[str] = (), model_dir: str | os.PathLike | None = None,
                    device: torch.device | None = None) -> Predictor:
    """The detector of `cfg.test.backend`, with every test-time option applied or refused as the options policy
    (detres.deploy.option_policy) says: torch runs the checkpoints eagerly (several form an App. B ensemble);
    onnxruntime/openvino run an export folder (`model_dir`), whose baked options must equal `cfg`'s, or export the
    one checkpoint on the fly into a temporary folder with `cfg`'s options (int8 too, calibrated on
    deploy.calib_images training images)."""
    backend = cfg.test.backend
    if backend not in BACKENDS:
        raise ConfigError(f"test.backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    if bool(ckpts) == bool(model_dir):
        raise UserError("give either --ckpt (a checkpoint) or --model (a tools/export.py folder), not both or none")
    check_options(cfg, backend=backend, num_models=len(ckpts) or 1)
    if backend == "torch":
        if model_dir:
            check_runtime(backend, cfg.deploy.precision)  # refuses: an export folder needs an exported runtime
        if cfg.deploy.threads > 0:
            torch.set_num_threads(cfg.deploy.threads)
        loaded = [load_detector(path, cfg, optimize=True) for path in ckpts]
        detector = Detector([model for model, _, _ in loaded], inference_options(cfg))
        return Predictor(run=detector.to(device) if device is not None else detector, class_map=loaded[0][1],
                         backend=backend)
    check_runtime(backend, cfg.deploy.precision, cfg.deploy)
    keep = None
    if ckpts:
        keep = _export_on_the_fly(ckpts[0], cfg, backend)
        model_dir = keep.name
    run, info = open_exported(model_dir, backend=backend, deploy=cfg.deploy)
    check_baked(cfg, info.baked, folder=str(info.folder))
    _check_same_input(cfg, info.input)
    return Predictor(run=run, class_map=info.class_map, backend=backend, keep=keep)


# On-the-fly exports of this process, by checkpoint file and everything the export bakes: a tool that builds
# predictors for several backends or options (detres ablate, the options tests) exports each graph once.
_EXPORTS: dict[tuple, tempfile.TemporaryDirectory] = {}


def _export_on_the_fly(ckpt: str, cfg: Config, backend: str) -> tempfile.TemporaryDirectory:
    """A temporary export folder of `ckpt` with `cfg`'s baked options (and an int8 model when deploy.precision is
    int8; with auto there is none, so it runs fp32: calibrating costs minutes and its accuracy would be unmeasured)."""
    stat = os.stat(ckpt)
    int8 = cfg.deploy.precision == "int8"
    key = (os.path.realpath(ckpt), stat.st_mtime_ns, stat.st_size, repr(sorted(baked_values(cfg).items())), int8,
           (cfg.deploy.calib_images, cfg.deploy.int8_quantizer, backend) if int8 else None)
    if key in _EXPORTS:
        log.info("test.backend=%s: the export of %s made earlier in this process, with the same options", backend,
                 ckpt)
        return _EXPORTS[key]
    folder = tempfile.TemporaryDirectory(prefix="detres_export_")
    model, class_map, stored = load_detector(ckpt, cfg)
    # deploy.calib_images training images; nothing measured, so the first recipe of the quantizer runs
    calibration = int8_data(stored, stored.deploy.calib_images, 0).calibration if int8 else None
    log.info("exporting %s for test.backend=%s into a temporary folder, with %s ...", ckpt, backend,
             ", ".join(f"{k}={v}" for k, v in baked_values(stored).items()))
    export_detector(model, stored, class_map, folder.name, fmt=EXPORT_FORMAT, calibration=calibration)
    _EXPORTS[key] = folder
    return folder


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
