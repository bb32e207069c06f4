"""Atomic checkpoint writing and safe loading (`weights_only=True`, always).

A checkpoint is a dict: model, optimizer, scheduler, iteration, config (plain dict), class map and any
extra state. It is written to a temporary file in the same folder, fsynced, then renamed over the
target, so a crash or a kill mid-write never leaves a half-written file under the real name.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from detres.errors import CheckpointError
from detres.io.atomic import atomic_file, write_atomic


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write `state` to `path` atomically; on failure the previous file is intact and no temp file remains."""
    path = Path(path)
    with atomic_file(path, fsync=True, what="checkpoint ", error=CheckpointError,
                     fix="check free disk space and permissions of the output folder") as handle:
        torch.save(state, handle)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint or weight file with `weights_only=True`; a file that would run code is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain containers "
            f"(weights_only=True): {str(exc).splitlines()[0]}. Only load files from sources you trust, "
            "and re-save them as plain state dicts") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"could not read checkpoint {path}: {str(exc).splitlines()[0]} "
                              "(truncated or not a PyTorch file?)") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, expected a dict (state dict or checkpoint)")
    return data


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The `last_checkpoint` target of a run folder, or None when the run has none yet."""
    pointer = Path(folder) / "last_checkpoint"
    if not pointer.is_file():
        return None
    target = Path(folder) / pointer.read_text().strip()
    return target if target.is_file() else None


def write_last_pointer(folder: str | os.PathLike, ckpt_name: str) -> None:
    """Atomically record which checkpoint file in `folder` is the latest."""
    write_atomic(Path(folder) / "last_checkpoint", ckpt_name, make_parents=False,
                 fix="check free disk space and permissions of the output folder")

