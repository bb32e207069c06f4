"""Load ResNet weights from a torchvision state dict or a detres classification checkpoint (weights_only)."""

from __future__ import annotations

import os

import torch

from detres.errors import CheckpointError
from detres.io.checkpoint import load_checkpoint
from detres.modeling.resnet import ResNet


def load_resnet_weights(model: ResNet, path: str | os.PathLike, *, skip_fc: bool = False) -> None:
    """Copy weights into `model`; `skip_fc` ignores the classifier (detection backbones have their own heads).

    Accepts a plain state dict (torchvision's `.pth`) or a checkpoint dict with the state dict under "model".
    A key missing from the file, an unexpected key or a shape mismatch is a CheckpointError naming them.
    """
    data = load_checkpoint(path)
    state = data["model"] if isinstance(data.get("model"), dict) else data
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    own = model.state_dict()
    if skip_fc:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        own = {k: v for k, v in own.items() if not k.startswith("fc.")}
    # BN counters are bookkeeping, not weights: older torchvision files lack them.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches (file vs model) {_short(wrong)}")
    if problems:
        raise CheckpointError(f"{path} does not fit this ResNet: {'; '.join(problems)}. Check "
                              "model.backbone.depth/width/shortcut/plain/norm against the file's network (a GN net "
                              "has no BN statistics: ImageNet BN weights do not load into model.backbone.norm=gn)")
    model.load_state_dict(state, strict=False)


def _short(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... (+{len(items) - limit} more)" if len(items) > limit else "")
