"""`detres export --int8`: make the int8 model by the recipes of detres.deploy.int8_recipes, measure each on the
measurement images (detres.deploy.int8_data: data.test, else the calibration images), and install the first that
kept the accuracy bound (or, when none did, the one that lost the least, which deploy.precision=auto then runs in
fp32). Every attempt goes into the json's `int8.attempts`.

Each attempt is written into its own staging folder inside the export folder and only the chosen one is moved in,
so an interrupted search leaves no int8 model and no json behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from torch import Tensor

from detres.config import DeployConfig
from detres.deploy.artifact import ExportInfo
from detres.deploy.int8_accuracy import BOUND, detect_all, kept_bound, measure_map, score, subset, worst_loss
from detres.deploy.int8_data import MeasureSet
from detres.deploy.int8_recipes import Recipe, recipes
from detres.deploy.quantize import QUANTIZERS, CalibrationTruth, install, quantize_into, staging_folder

log = logging.getLogger("detres.deploy")


def search_int8(onnx_path: Path, calibration: Sequence[Tensor], measure: MeasureSet | None, out: Path,
                info: dict, deploy: DeployConfig, backend: str) -> dict:
    """The json's `int8` record: the installed model's artifact, quantizer, recipe, settings and accuracy, and
    every attempt. The recipes are deploy.int8_quantizer's for test.backend `backend`; with nothing to measure on
    (`measure` None) or with deploy.int8_search off, only the first runs."""
    searched = measure is not None and deploy.int8_search
    fp32 = _Reference(out, info, deploy, measure)
    tried: list[tuple[dict, Path]] = []
    tic = time.perf_counter()
    with ExitStack() as stack:
        for recipe in recipes(deploy.int8_quantizer, backend, searched=searched):
            folder = Path(stack.enter_context(staging_folder(out)))
            attempt, artifact = _attempt(recipe, onnx_path, calibration, folder, fp32)
            if measure is not None:
                attempt["accuracy"] = _accuracy(recipe, artifact, out, info, deploy, fp32)
                attempt["kept_bound"] = kept_bound(attempt["accuracy"])
            tried.append((attempt, artifact))
            if not searched or attempt["kept_bound"]:
                break
        chosen, artifact = _choose(tried)
        installed = install(artifact, out)
    if searched and not chosen["kept_bound"]:
        log.warning("int8: no recipe kept the bound (mAP@.5 -%s, mAP@[.5,.95] -%s) on %s; "
                    "installed %s, which lost the least; deploy.precision=auto runs this folder in fp32",
                    BOUND["map50"], BOUND["map"], measure.name, chosen["recipe"])
    return {"artifact": installed.name, "quantizer": chosen["quantizer"], "recipe": chosen["recipe"],
            "settings": chosen["settings"], "calibration_images": len(calibration),
            "seconds": round(time.perf_counter() - tic, 1), "accuracy": chosen["accuracy"],
            "attempts": [attempt for attempt, _ in tried]}


class _Reference:
    """The fp32 model's detections of the measurement images in each runtime, computed once: the fp32 side of
    every attempt's accuracy and of accuracy control's metric."""

    def __init__(self, out: Path, info: dict, deploy: DeployConfig, measure: MeasureSet | None) -> None:
        self.info, self.deploy = ExportInfo(folder=out, data=info), deploy
        self.measure = measure
        self.images, self.truth = (measure.images, measure.truth) if measure else ([], None)
        self._detections: dict[str, list] = {}
        self._scores: dict[tuple, dict[str, float]] = {}  # (runtime, image indices) -> fp32 mAPs

    def detections(self, runtime_name: str) -> list:
        from detres.deploy.loader import RUNTIMES

        if runtime_name not in self._detections:
            detector = RUNTIMES[runtime_name].open(self.info, replace(self.deploy, precision="fp32"))
            self._detections[runtime_name] = detect_all(detector, self.images, self.truth)
        return self._detections[runtime_name]

    def metric(self, runtime_name: str):
        """Accuracy control's metric: 100 minus the worst loss against fp32, as a share of its bound, on the
        measurement images of the given indices (fp32 itself scores 100; a model that keeps the bound 99 or more).
        Not 0 for fp32: NNCF divides by the fp32 metric to compute a relative drop, even when it uses the absolute."""
        def metric(detector, indices: Sequence[int]) -> float:
            truth = subset(self.truth, indices)
            found = measure_map(detector, [self.images[i] for i in indices], truth)
            return 100.0 - worst_loss(self._score(runtime_name, tuple(indices), truth), found)
        return metric

    def _score(self, runtime_name: str, indices: tuple[int, ...], truth: CalibrationTruth) -> dict[str, float]:
        """The fp32 mAPs of these images, evaluated once: ranking asks for each image again for every layer group."""
        key = (runtime_name, indices)
        if key not in self._scores:
            self._scores[key] = score([self.detections(runtime_name)[i] for i in indices], truth)
        return self._scores[key]


def _attempt(recipe: Recipe, onnx_path: Path, calibration: Sequence[Tensor], folder: Path,
             fp32: _Reference) -> tuple[dict, Path]:
    tic = time.perf_counter()
    log.info("int8: %s on %d calibration images ...", recipe.name, len(calibration))
    metric = fp32.metric(QUANTIZERS[recipe.quantizer].runtime) if recipe.accuracy_control else None
    options = recipe.options(onnx_path, metric, max_drop=1.0, validation=fp32.images)  # metric units: 1 = the bound
    artifact = quantize_into(onnx_path, calibration, folder, recipe.quantizer, options)
    attempt = {"recipe": recipe.name, "quantizer": recipe.quantizer, "settings": recipe.settings(),
               "seconds": round(time.perf_counter() - tic, 1), "accuracy": None, "kept_bound": None}
    return attempt, artifact


def _accuracy(recipe: Recipe, artifact: Path, out: Path, info: dict, deploy: DeployConfig, fp32: _Reference) -> dict:
    """fp32 and int8 mAP on the measurement images, in the quantizer's runtime (the staged model read in place)."""
    from detres.deploy.loader import RUNTIMES

    runtime_name = QUANTIZERS[recipe.quantizer].runtime
    relative = artifact.relative_to(out).as_posix()
    staged = ExportInfo(folder=out, data={**info, "int8": {"artifact": relative, "quantizer": recipe.quantizer}})
    before = score(fp32.detections(runtime_name), fp32.truth)
    int8 = measure_map(RUNTIMES[runtime_name].open(staged, replace(deploy, precision="int8")), fp32.images,
                       fp32.truth)
    log.info("int8 (%s) on %s: mAP@.5 %.2f -> %.2f, mAP@[.5,.95] %.2f -> %.2f", recipe.name, fp32.measure.name,
             before["map50"], int8["map50"], before["map"], int8["map"])
    return {"runtime": runtime_name, "images": fp32.measure.name, "fp32": before, "int8": int8}


def _choose(tried: list[tuple[dict, Path]]) -> tuple[dict, Path]:
    """The first attempt that kept the bound; else the one whose worst loss, as a share of its bound, is least."""
    for attempt, artifact in tried:
        if attempt["kept_bound"] in (True, None):
            return attempt, artifact
    return min(tried, key=lambda item: worst_loss(item[0]["accuracy"]["fp32"], item[0]["accuracy"]["int8"]))
