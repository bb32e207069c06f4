"""Where the shorter side of a training image comes from: `data.input.train_scales`, or the test pyramid's levels
(multi-scale training, which the paper's App. B left undone), drawn per image or once per mini-batch."""

from __future__ import annotations

import numpy as np

from detres.config import InputConfig
from detres.errors import ConfigError

SOURCES = ("train_scales", "test_pyramid")
SAMPLINGS = ("image", "iteration")
_BATCH_STREAM = 1  # a stream of its own, apart from the per-image (seed, epoch, index) draws


def train_scale_choices(input_cfg: InputConfig, pyramid: list[int]) -> tuple[list[int], float, bool]:
    """(scales to draw from, longer-side cap ratio (0: data.input.max_size), one scale per batch?).

    test_pyramid: the levels of test.pyramid_scales, each with its longer side capped at
    scale * max_size / test_scale, the cap the test pyramid applies (detres.modeling.multiscale.pyramid_factors).
    """
    if input_cfg.train_scale_source not in SOURCES:
        raise ConfigError(f"data.input.train_scale_source={input_cfg.train_scale_source!r} is not one of: "
                          f"{', '.join(SOURCES)}")
    if input_cfg.train_scale_sampling not in SAMPLINGS:
        raise ConfigError(f"data.input.train_scale_sampling={input_cfg.train_scale_sampling!r} is not one of: "
                          f"{', '.join(SAMPLINGS)}")
    pyramid_source = input_cfg.train_scale_source == "test_pyramid"
    scales = [int(s) for s in (pyramid if pyramid_source else input_cfg.train_scales)]
    if not scales or min(scales) < 1:
        key = "test.pyramid_scales" if pyramid_source else "data.input.train_scales"
        raise ConfigError(f"{key}={scales} must list at least one positive shorter side, e.g. [600]")
    ratio = input_cfg.max_size / input_cfg.test_scale if pyramid_source else 0.0
    return scales, ratio, input_cfg.train_scale_sampling == "iteration"


def batch_scale(scales: list[int], *, seed: int, epoch: int, iteration: int) -> int:
    """The shorter side of every image of the `iteration`-th mini-batch of an epoch: a pure function of
    (seed, epoch, iteration), the same in every process under torchrun and after a resume."""
    return int(np.random.default_rng([seed, epoch, iteration, _BATCH_STREAM]).choice(scales))
