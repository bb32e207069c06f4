"""Run folders: created fresh, or reused only with --resume, so a finished run is never overwritten."""

from __future__ import annotations

from pathlib import Path

from detres.config import Config, save_config
from detres.errors import UserError
from detres.io.checkpoint import latest_checkpoint


def prepare_run_dir(cfg: Config, resume: bool) -> Path | None:
    """Create cfg.output.dir and write the resolved config there; return the checkpoint to resume from.

    Refuses an existing run folder that holds checkpoints unless `resume` is set, and `resume` on a
    folder with no checkpoint.
    """
    out = Path(cfg.output.dir)
    last = latest_checkpoint(out) if out.exists() else None
    if resume and last is None:
        raise UserError(f"--resume: no checkpoint in {out} (expected {out / 'last_checkpoint'}); "
                        "drop --resume to start a new run")
    if not resume and out.exists() and (last is not None or any(out.glob("*.pth"))):
        raise UserError(f"run folder {out} already holds checkpoints; pass --resume to continue it, "
                        "or choose another output.dir=... to start a new run")
    out.mkdir(parents=True, exist_ok=True)
    for stray in out.glob(".*.tmp"):  # left by a process killed mid-write; the real files are intact
        stray.unlink(missing_ok=True)
    save_config(cfg, out / "config.yaml")
    return last
