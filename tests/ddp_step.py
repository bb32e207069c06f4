"""Helper of tests/test_det_behaviour.py (not a test): one training step of the detection Trainer, recorded.

    python tests/ddp_step.py OUT_DIR KEY=VALUE ...                                     # one process
    torchrun --standalone --nproc_per_node=2 tests/ddp_step.py OUT_DIR KEY=VALUE ...   # DDP, gloo on the CPU

The config is configs/demo.yaml with the overrides. Each process builds the real `Trainer` (which joins the
process group and wraps the model in DistributedDataParallel under torchrun), takes the first batch of its loader
shard, runs `Trainer.step` (forward, backward, SGD step) and writes OUT_DIR/rank<r>.pt: its loss values, the
gradients the optimizer used (all-reduced by DDP), the weights after the step and the target boxes it trained on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def run_step(out_dir: Path, overrides: list[str]) -> Path:
    """One recorded Trainer step; returns the file written."""
    from detres import distributed as dist
    from detres.config import load_config
    from detres.engine.trainer import Trainer

    torch.set_num_threads(1)
    trainer = Trainer(load_config(REPO / "configs" / "demo.yaml", overrides))
    try:
        images, targets = next(trainer.batches())
        losses = trainer.step(images, targets)
        model = trainer.model
        record = {"losses": losses,
                  "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
                  "weights": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
                  "boxes": [t["boxes"].clone() for t in targets], "world_size": dist.world_size(),
                  "ddp": trainer.net is not trainer.model}
        path = Path(out_dir) / f"rank{dist.rank()}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(record, path)
        return path
    finally:
        dist.cleanup()


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    run_step(Path(sys.argv[1]), sys.argv[2:])
