"""Metrics files: one flat JSON object per evaluation, values in percent, keys `<family>/<name>` (DESIGN.md)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from detres.io.atomic import write_atomic


def write_metrics(metrics: dict[str, float], path: str | os.PathLike) -> Path:
    """Write the flat metrics dict as JSON, atomically (temporary file, then rename)."""
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    return write_atomic(path, json.dumps(clean, indent=2, sort_keys=True) + "\n", fix="check --out")


def format_metrics(metrics: dict[str, float]) -> str:
    """A short table for people: one `key  value` line per headline metric (per-class rows are left out)."""
    rows = [(k, v) for k, v in metrics.items() if k.count("/") == 1]
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k:<{width}}  {v:7.2f}" if isinstance(v, (int, float)) else f"{k:<{width}}  {v}"
                     for k, v in rows)
