"""`train_detector`, the entry of detection training: solver.mode picks the joint run (one Trainer) or the paper's
step-wise recipe (detres.engine.stepwise, four Trainer runs). It sits above both, so that neither imports the other's
caller (trainer.py and stepwise.py imported each other when this lived in trainer.py)."""

from __future__ import annotations

from detres import distributed as dist
from detres.config import Config
from detres.engine.stepwise import train_stepwise
from detres.engine.trainer import Trainer
from detres.errors import ConfigError


def train_detector(cfg: Config, *, resume: bool = False) -> dict[str, float]:
    """Train and evaluate; returns the final metrics (empty on non-main processes). solver.mode=stepwise runs
    the four steps of alternating training (detres.engine.stepwise)."""
    if cfg.solver.mode == "stepwise":
        return train_stepwise(cfg, resume=resume)
    if cfg.solver.mode != "joint":
        raise ConfigError(f"solver.mode={cfg.solver.mode!r} is not one of: joint, stepwise")
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.train()
    finally:
        dist.cleanup()
