"""Memory over long runs: the training soak behind tools/soak_memory.py (the probe and its trace: engine.memory).

A leak that costs a few hundred kB per iteration is invisible in a short test and fatal in a week-long run.
The soak trains a config for N iterations through the real training loop and compares the resident memory
(RSS) after a warm-up iteration with the RSS at the end: allocator pools, the data loader and lazily built
caches settle during the warm-up, so growth after it means something accumulates per iteration.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from detres import distributed as dist
from detres.config import Config
from detres.engine.memory import MemoryTrace, peak_rss_mb
from detres.errors import ConfigError

log = logging.getLogger("detres.soak")


def _measured_trainer(cfg: Config, trace: MemoryTrace):
    """The real Trainer, each completed optimizer step also recording the process's RSS into `trace`; the
    evaluation at the end is skipped (it comes after the last measurement and would only cost time).

    The training stack is imported here, not at the top: tools/infer.py uses the memory probes above and
    should not pay for loading it.
    """
    from detres.engine.trainer import Trainer

    class MeasuredTrainer(Trainer):
        def step(self, images: list, targets: list) -> dict[str, float]:
            values = super().step(images, targets)
            trace.record(self.iteration + 1)  # the loop increments the iteration after step() returns
            return values

        def evaluate(self) -> dict[str, float]:
            return {}

    return MeasuredTrainer(cfg)


@dataclass
class SoakResult:
    """RSS at the baseline iteration and at the last one; `ratio` = final / baseline."""

    iterations: int
    trace: MemoryTrace

    @property
    def ratio(self) -> float:
        return self.trace.final_mib / self.trace.baseline_mib

    def summary(self) -> str:
        t = self.trace
        return (f"RSS {t.baseline_mib:.1f} MiB at iteration {t.baseline_step}, {t.final_mib:.1f} MiB at iteration "
                f"{t.final_step}: ratio {self.ratio:.3f} ({100 * (self.ratio - 1):+.1f}%), "
                f"peak {peak_rss_mb():.1f} MiB")


def soak_memory(cfg: Config, *, iterations: int = 300, baseline: int = 50,
                output_dir: str | Path | None = None) -> SoakResult:
    """Train `cfg` for `iterations` iterations through the real loop, recording RSS after every step.

    The run goes to `output_dir`, or to a temporary folder removed afterwards (a soak must not leave a run
    folder behind, nor collide with a real run in cfg.output.dir). TensorBoard is off: its writer is not
    what a soak measures.
    """
    if not 0 < baseline < iterations:
        raise ConfigError(f"the baseline iteration ({baseline}) must lie between 0 and the iterations ({iterations})")
    with tempfile.TemporaryDirectory(prefix="detres-soak-") as tmp:
        out = Path(output_dir) if output_dir is not None else Path(tmp) / "run"
        cfg = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, max_iter=iterations),
                                  output=dataclasses.replace(cfg.output, dir=str(out), tensorboard=False))
        trace = MemoryTrace(baseline_step=baseline)
        try:
            _measured_trainer(cfg, trace).train()
        finally:
            dist.cleanup()
    result = SoakResult(iterations=iterations, trace=trace)
    log.info("%s", result.summary())
    return result
