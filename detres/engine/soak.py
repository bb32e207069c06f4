"""Memory over long runs: a resident-memory probe, a trace of it, and the training soak behind tools/soak_memory.py.

A leak that costs a few hundred kB per iteration is invisible in a short test and fatal in a week-long run.
The soak trains a config for N iterations through the real training loop and compares the resident memory
(RSS) after a warm-up iteration with the RSS at the end: allocator pools, the data loader and lazily built
caches settle during the warm-up, so growth after it means something accumulates per iteration.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from detres import distributed as dist
from detres.config import Config
from detres.engine.memory import peak_rss_mb
from detres.errors import ConfigError

log = logging.getLogger("detres.soak")


def rss_mib() -> float:
    """Current resident set size of this process in MiB (VmRSS); the peak so far where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


@dataclass
class MemoryTrace:
    """RSS after a baseline count of steps (images, iterations) and at the latest step; constant size.

    `growth` = latest / baseline - 1; the peak is the kernel's high-water mark over the whole process.
    """

    baseline_step: int
    baseline_mib: float | None = None
    final_step: int = 0
    final_mib: float | None = None

    def record(self, step: int) -> None:
        """Call after step `step` (1-based) is done."""
        value = rss_mib()
        if step == self.baseline_step:
            self.baseline_mib = value
        self.final_step, self.final_mib = step, value

    @property
    def growth(self) -> float | None:
        if self.baseline_mib is None or self.final_mib is None:
            return None
        return self.final_mib / self.baseline_mib - 1.0

    def report(self) -> dict[str, float | int | None]:
        """A flat dict for json reports (MiB, growth in percent)."""
        growth = self.growth
        return {"baseline_step": self.baseline_step, "baseline_rss_mib": _round(self.baseline_mib),
                "final_step": self.final_step, "final_rss_mib": _round(self.final_mib),
                "peak_rss_mib": round(peak_rss_mb(), 1),
                "growth_percent": None if growth is None else round(100.0 * growth, 2)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


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
