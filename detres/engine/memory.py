"""Resident memory of this process: the current and peak values (the peak resettable on Linux, so model
construction does not count), and a constant-size trace of it over a run (training soak, folder inference)."""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of resident memory (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_mib(field: str) -> float:
    """A memory line of /proc/self/status (VmHWM: peak, VmRSS: current) in MiB; the peak from getrusage where /proc
    is missing (ru_maxrss is kB on Linux and bytes on macOS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def peak_rss_mb() -> float:
    """Peak resident set size in MiB since start or the last `reset_peak_rss`."""
    return _status_mib("VmHWM")


def rss_mib() -> float:
    """Current resident set size of this process in MiB (VmRSS); the peak so far where /proc is missing."""
    return _status_mib("VmRSS")


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
