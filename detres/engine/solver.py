"""SGD and the paper's learning-rate schedules: step by iteration with linear warm-up, plateau, CIFAR."""

from __future__ import annotations

import torch
from torch import nn

from detres.config import SolverConfig
from detres.errors import ConfigError


def build_optimizer(model: nn.Module, cfg: SolverConfig) -> torch.optim.SGD:
    """SGD with momentum over trainable parameters; no weight decay on BN/bias terms (1-d tensors)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=cfg.base_lr, momentum=cfg.momentum)


def lr_factor_at(cfg: SolverConfig, iteration: int) -> float:
    """Multiplier of base_lr at `iteration` for the `step` and `cifar` schedules (a pure function).

    step: linear warm-up from warmup_factor over warmup_iters, then x gamma at each of `steps`.
    cifar: as step; warm-up is constant (ResNet-110 trains at 0.1*base until warmup_iters, Sec. 4.2).
    """
    factor = cfg.gamma ** sum(iteration >= s for s in cfg.steps)
    if iteration < cfg.warmup_iters:
        if cfg.schedule == "cifar":
            return cfg.warmup_factor
        alpha = iteration / cfg.warmup_iters
        return factor * (cfg.warmup_factor * (1 - alpha) + alpha)
    return factor


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: SolverConfig):
    """LambdaLR for step/cifar (call .step() every iteration); ReduceLROnPlateau for plateau (per epoch)."""
    if cfg.schedule in ("step", "cifar"):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor_at(cfg, it))
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.1, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    raise ConfigError(f"solver.schedule={cfg.schedule!r} is not one of: step, plateau, cifar")
