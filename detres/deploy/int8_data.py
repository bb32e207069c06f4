"""The images of an int8 export: training images that calibrate it, and annotated images that measure each attempt.

The bound an int8 model must keep (mAP@.5 -0.5, mAP@[.5,.95] -1.0) is a bound on held-out images, so the search
measures on the test split (data.test, the model's validation split) when it has boxes: on the trained R-50, NNCF
with int8 at conv/matmul inputs only kept the bound on its own 32 calibration images (+0.28 / -0.45) and lost
1.00 / 1.67 on val (docs/deploy.md). Without
an annotated test split it measures on the calibration images, and says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import Tensor

from detres.config import Config
from detres.data.detection import build_split
from detres.deploy.quantize import CalibrationTruth, calibration_set
from detres.errors import ConfigError, UserError

log = logging.getLogger("detres.deploy")


@dataclass
class MeasureSet:
    """Images with ground truth on which fp32 and int8 mAP are measured, and what they are (for the json)."""

    images: list[Tensor]
    truth: CalibrationTruth
    name: str  # e.g. "100 images of data.test" or "the 64 calibration images"


@dataclass
class Int8Data:
    calibration: list[Tensor]
    measure: MeasureSet | None  # None: nothing to measure on (no box anywhere)


def int8_data(stored: Config, calib: int, measure: int) -> Int8Data:
    """`calib` training images to calibrate (evenly spread), and up to `measure` images of data.test to measure
    on (deploy.int8_measure_images; 0, or a test split without boxes: the calibration images themselves)."""
    if measure < 0:
        raise ConfigError(f"deploy.int8_measure_images={measure}: give 0 (measure on the calibration images) or a "
                          "positive number of test-split images")
    backbone = stored.model.backbone
    split = dict(pixel_mean=backbone.pixel_mean, pixel_std=backbone.pixel_std, train=False, seed=stored.seed)
    calibration, truth = calibration_set(build_split(stored.data, "train", **split), calib)
    held_out = _test_split(stored, measure, split) if measure > 0 else None
    if held_out is not None:
        return Int8Data(calibration, held_out)
    own = MeasureSet(calibration, truth, f"the {len(calibration)} calibration images") if truth else None
    return Int8Data(calibration, own)


def _test_split(stored: Config, measure: int, split: dict) -> MeasureSet | None:
    """Up to `measure` images of data.test with their ground truth; None (logged) when it has no box or cannot
    be read: the export does not need a test split, only its measurement does."""
    try:
        dataset = build_split(stored.data, "test", **split)
    except UserError as err:
        log.warning("int8: data.test cannot be read (%s); measuring on the calibration images instead "
                    "(deploy.int8_measure_images=0 does this without the warning)", err)
        return None
    images, truth = calibration_set(dataset, min(measure, len(dataset)))
    if truth is None:
        log.warning("int8: data.test has no boxes; measuring on the calibration images instead")
        return None
    return MeasureSet(images, truth, f"{len(images)} image{'s' * (len(images) != 1)} of data.test")
