"""The synthetic data sets of the demos, generated on first use by their scripts in datasets/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from detres.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def ensure_demo_data(script: str, root: str | Path, *, seed: int) -> Path:
    """Run `script` (a path relative to the repository, e.g. datasets/make_shapes.py) to write its set into `root`
    unless `root` exists. The set is written into a temporary sibling folder and renamed into place, so an
    interrupted generation never leaves a half-written set that later runs would take as complete, and processes
    started together (torchrun) that all generate it keep the first complete copy."""
    root = Path(root)
    if root.exists():
        return root
    generator = Path(script) if Path(script).is_absolute() else REPO / script
    if not generator.is_file():
        raise DataError(f"data.generate_demo names {script}, which does not exist (expected under {REPO})")
    partial = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    print(f"generating the synthetic set in {root} ({generator.name}) ...", flush=True)
    try:
        subprocess.run([sys.executable, str(generator), "--out", str(partial), "--seed", str(seed)], check=True)
        partial.rename(root)
    except OSError:
        if not root.exists():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # another process's copy won the rename, or generation failed
    return root
