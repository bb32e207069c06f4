"""The synthetic data sets of the demos, generated on first use by their scripts in datasets/.

`data.generate_demo` names the script. Every tool that reads a dataset from a config reaches it through
`ensure_split_data` (called by `detres.data.detection.read_split` and the classification and localization
builders' tools), so a demo config runs on a fresh checkout whatever the tool."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from detres.config import DataConfig, DatasetConfig
from detres.data.formats import split_path
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


def demo_root(ds: DatasetConfig) -> Path:
    """The `--out` folder of a demo script that holds the split `ds`, from the layout the scripts write:
    OUT/coco/annotations/<file>.json (make_shapes.py), OUT/VOCdevkit (make_shapes.py), OUT itself for the
    classification and localization sets (make_cls_shapes.py, make_loc_shapes.py)."""
    if ds.format == "coco":
        return Path(ds.ann_file).parents[2]
    if ds.format == "voc":
        return Path(ds.root).parent
    return Path(ds.root)


def ensure_split_data(data: DataConfig, ds: DatasetConfig, *, seed: int = 0) -> None:
    """Generate the demo's synthetic set when `data.generate_demo` names a script and the split `ds` is absent.

    The script writes into `demo_root(ds)`, and only when that folder does not exist: a folder that exists is
    never written into (a partial or foreign set then gets the reader's not-found message, not an overwrite)."""
    path = split_path(ds)
    if not data.generate_demo or not str(path) or path.exists():
        return
    root = demo_root(ds)
    if not root.exists():
        ensure_demo_data(data.generate_demo, root, seed=seed)
