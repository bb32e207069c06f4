"""`detres export --int8`: make the int8 model by the recipes of detres.deploy.int8_recipes, measure each on the
calibration images, and install the first that kept the accuracy bound (or, when none did, the one that lost the
least, which deploy.precision=auto then runs in fp32). Every attempt goes into the json's `int8.attempts`.

Each attempt is written into its own staging folder inside the export folder and only the chosen one is moved in,
so an interrupted search leaves no int8 model and no json behind.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from torch import Tensor

from detres.config import DeployConfig
from detres.deploy.artifact import ExportInfo
from detres.deploy.int8_accuracy import BOUND, kept_bound, measure_map
from detres.deploy.int8_recipes import Recipe, recipes
from detres.deploy.quantize import QUANTIZERS, CalibrationTruth, install, quantize_into, staging_folder

log = logging.getLogger("detres.deploy")


def search_int8(onnx_path: Path, calibration: Sequence[Tensor], truth: CalibrationTruth | None, out: Path,
                quantizer: str, info: dict, deploy: DeployConfig) -> dict:
    """The json's `int8` record: the installed model's artifact, quantizer, recipe, settings and accuracy, and
    every attempt. Without ground truth (`truth` None) or with deploy.int8_search off, only the first recipe runs."""
    searched = truth is not None and deploy.int8_search
    ladder = recipes(quantizer, searched=searched)
    metric = _metric(calibration, truth) if truth is not None else None
    fp32: dict[str, dict] = {}  # runtime -> fp32 mAP, measured once
    tried: list[tuple[dict, Path]] = []
    tic = time.perf_counter()
    with ExitStack() as stack:
        for recipe in ladder:
            folder = Path(stack.enter_context(staging_folder(out)))
            attempt, artifact = _attempt(recipe, onnx_path, calibration, folder, metric)
            if truth is not None:
                attempt["accuracy"] = _accuracy(recipe, artifact, out, info, deploy, calibration, truth, fp32)
                attempt["kept_bound"] = kept_bound(attempt["accuracy"])
            tried.append((attempt, artifact))
            if not searched or attempt["kept_bound"]:
                break
        chosen, artifact = _choose(tried)
        installed = install(artifact, out)
    if searched and not chosen["kept_bound"]:
        log.warning("int8: no recipe kept the bound (mAP@.5 -%s, mAP@[.5,.95] -%s) on the calibration images; "
                    "installed %s, which lost the least; deploy.precision=auto runs this folder in fp32",
                    BOUND["map50"], BOUND["map"], chosen["recipe"])
    return {"artifact": installed.name, "quantizer": chosen["quantizer"], "recipe": chosen["recipe"],
            "settings": chosen["settings"], "calibration_images": len(calibration),
            "seconds": round(time.perf_counter() - tic, 1), "accuracy": chosen["accuracy"],
            "attempts": [attempt for attempt, _ in tried]}


def _attempt(recipe: Recipe, onnx_path: Path, calibration: Sequence[Tensor], folder: Path, metric) -> tuple[dict,
                                                                                                           Path]:
    tic = time.perf_counter()
    log.info("int8: %s on %d calibration images ...", recipe.name, len(calibration))
    options = recipe.options(onnx_path, metric, max_drop=BOUND["map50"])
    artifact = quantize_into(onnx_path, calibration, folder, recipe.quantizer, options)
    attempt = {"recipe": recipe.name, "quantizer": recipe.quantizer, "settings": recipe.settings(),
               "seconds": round(time.perf_counter() - tic, 1), "accuracy": None, "kept_bound": None}
    return attempt, artifact


def _accuracy(recipe: Recipe, artifact: Path, out: Path, info: dict, deploy: DeployConfig,
              calibration: Sequence[Tensor], truth: CalibrationTruth, fp32: dict[str, dict]) -> dict:
    """fp32 and int8 mAP on the calibration images, in the quantizer's runtime (the staged model read in place)."""
    from detres.deploy.loader import RUNTIMES

    runtime_name = QUANTIZERS[recipe.quantizer].runtime
    runtime = RUNTIMES[runtime_name]
    relative = artifact.relative_to(out).as_posix()
    staged = ExportInfo(folder=out, data={**info, "int8": {"artifact": relative, "quantizer": recipe.quantizer}})
    if runtime_name not in fp32:
        fp32[runtime_name] = measure_map(runtime.open(staged, replace(deploy, precision="fp32")), calibration, truth)
    int8 = measure_map(runtime.open(staged, replace(deploy, precision="int8")), calibration, truth)
    before = fp32[runtime_name]
    log.info("int8 (%s) on the calibration images: mAP@.5 %.2f -> %.2f, mAP@[.5,.95] %.2f -> %.2f", recipe.name,
             before["map50"], int8["map50"], before["map"], int8["map"])
    return {"runtime": runtime_name, "images": f"the {len(calibration)} calibration images", "fp32": before,
            "int8": int8}


def _choose(tried: list[tuple[dict, Path]]) -> tuple[dict, Path]:
    """The first attempt that kept the bound; else the one whose worst loss, as a share of its bound, is least."""
    for attempt, artifact in tried:
        if attempt["kept_bound"] in (True, None):
            return attempt, artifact

    def worst(item: tuple[dict, Path]) -> float:
        accuracy = item[0]["accuracy"]
        return max((accuracy["fp32"][key] - accuracy["int8"][key]) / bound for key, bound in BOUND.items())
    return min(tried, key=worst)


def _metric(calibration: Sequence[Tensor], truth: CalibrationTruth):
    """mAP@.5 (points) of a detector on the calibration images of the given indices: accuracy control's measure.
    An image subset without a scored class gives NaN in COCO's evaluation; it counts as 0 so ranking can sort."""
    def metric(detector, indices: Sequence[int]) -> float:
        subset = CalibrationTruth(records=[truth.records[i] for i in indices],
                                  scales=[truth.scales[i] for i in indices], class_map=truth.class_map)
        value = measure_map(detector, [calibration[i] for i in indices], subset)["map50"]
        return value if math.isfinite(value) and value > 0 else 0.0
    return metric
