"""Classification training (Sec. 3.4 / 4.2): SGD, plateau or step schedule, atomic checkpoints, exact resume.

Epoch-based. The data order and the augmentation are pure functions of (seed, epoch, index), and checkpoints
are written at epoch ends, so `--resume` replays exactly the epochs an uninterrupted run would have run.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from detres import distributed as dist
from detres.cli.progress import progress
from detres.config import Config, config_to_dict
from detres.data.classification import build_cls_dataset
from detres.data.loader import CheckedLoader
from detres.engine.run_dir import prepare_run_dir
from detres.engine.solver import build_lr_scheduler, build_optimizer
from detres.errors import UserError
from detres.evaluation.classification import evaluate_classifier, transform_for_mode
from detres.io.checkpoint import load_checkpoint, save_checkpoint, write_last_pointer
from detres.modeling.resnet import ResNet, build_resnet

log = logging.getLogger("detres.cls")


def build_classifier(cfg: Config, num_classes: int) -> ResNet:
    return build_resnet(cfg.model.backbone, num_classes=num_classes)


def _loader(dataset, cfg: Config, epoch: int, distributed: bool) -> DataLoader:
    per_process = max(1, cfg.solver.ims_per_batch // dist.world_size())
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
    else:
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        sampler = RandomSampler(dataset, generator=generator)
    dataset.set_epoch(epoch)
    return CheckedLoader(dataset, batch_size=per_process, sampler=sampler, num_workers=cfg.data.num_workers,
                         drop_last=True, persistent_workers=False, timeout=cfg.data.loader_timeout)


def _epochs(cfg: Config, batches_per_epoch: int) -> int:
    if cfg.solver.max_epochs > 0:
        return cfg.solver.max_epochs
    return max(1, math.ceil(cfg.solver.max_iter / batches_per_epoch))


def train_classifier(cfg: Config, *, resume: bool = False) -> dict[str, float]:
    """Train `cfg` and return the final validation metrics (percent errors); writes into cfg.output.dir."""
    device = dist.resolve_device(cfg.device)
    distributed = dist.init_distributed(device)
    main = dist.is_main_process()
    resume_from = prepare_run_dir(cfg, resume) if main else None
    torch.manual_seed(cfg.seed)
    mean, std = cfg.model.backbone.pixel_mean, cfg.model.backbone.pixel_std
    train_set = build_cls_dataset(cfg.data.train, input_cfg=cfg.data.input, pixel_mean=mean, pixel_std=std,
                                  train=True)
    train_set.seed = cfg.seed
    val_set = build_cls_dataset(cfg.data.test, input_cfg=cfg.data.input, pixel_mean=mean, pixel_std=std,
                                train=False, transform=transform_for_mode("center", cfg.data.input, mean, std))
    if len(train_set) < cfg.solver.ims_per_batch:
        raise UserError(f"training set has {len(train_set)} images, fewer than solver.ims_per_batch="
                        f"{cfg.solver.ims_per_batch}; lower the batch size")
    model = build_classifier(cfg, len(train_set.class_names)).to(device)
    optimizer = build_optimizer(model, cfg.solver)
    scheduler = build_lr_scheduler(optimizer, cfg.solver)
    start_epoch, iteration = 0, 0
    if resume:
        resume_from = resume_from or Path(cfg.output.dir) / (Path(cfg.output.dir) / "last_checkpoint").read_text()
        state = load_checkpoint(resume_from)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, iteration = state["epoch"] + 1, state["iteration"]
        log.info("resumed from %s at epoch %d", resume_from, start_epoch)
    net = DistributedDataParallel(model) if distributed else model
    writer = _tensorboard(cfg) if main else None
    per_epoch = len(train_set) // max(1, cfg.solver.ims_per_batch // dist.world_size())
    epochs = _epochs(cfg, per_epoch)
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, epochs):
        net.train()
        loader = _loader(train_set, cfg, epoch, distributed)
        bar = progress(loader, desc=f"epoch {epoch + 1}/{epochs}", enabled=main, leave=False)
        for images, labels in bar:
            loss = F.cross_entropy(net(images.to(device)), labels.to(device))
            if not torch.isfinite(loss):
                raise UserError(f"non-finite loss {loss.item()} at iteration {iteration} (epoch {epoch}); "
                                "lower solver.base_lr; the last checkpoint is intact")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if cfg.solver.schedule != "plateau":
                scheduler.step()
            iteration += 1
            if cfg.solver.max_epochs <= 0 and iteration >= cfg.solver.max_iter:
                break  # an iteration budget (the CIFAR schedule stops at 64k) may end inside the last epoch
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4g}")
            if writer and iteration % cfg.output.log_period == 0:
                writer.add_scalar("train/loss", loss.item(), iteration)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], iteration)
        metrics = evaluate_classifier(model, val_set, mode="center", crop_size=cfg.data.input.crop_size,
                                      scales=cfg.test.cls_scales)
        if cfg.solver.schedule == "plateau":
            scheduler.step(metrics["cls/top1_err"])
        if main:
            log.info("epoch %d: top-1 err %.2f%%, top-5 err %.2f%%", epoch + 1, metrics["cls/top1_err"],
                     metrics["cls/top5_err"])
            if writer:
                for key, value in metrics.items():
                    writer.add_scalar(f"val/{key.split('/')[1]}", value, iteration)
            _save(cfg, model, optimizer, scheduler, epoch, iteration, train_set.class_names,
                  final=epoch == epochs - 1)
    if writer:
        writer.close()
    dist.cleanup()
    return metrics


def _save(cfg: Config, model, optimizer, scheduler, epoch: int, iteration: int, class_names: list[str],
          final: bool) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch, "iteration": iteration, "config": config_to_dict(cfg), "class_names": class_names}
    name = "model_final.pth" if final else f"model_epoch{epoch + 1:04d}.pth"
    save_checkpoint(state, Path(cfg.output.dir) / name)
    write_last_pointer(cfg.output.dir, name)


def _tensorboard(cfg: Config):
    if not cfg.output.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(Path(cfg.output.dir) / "tb"))
