"""Training of the two localization stages: the per-class RPN on random crops, then the RoI-centric R-CNN on
the RPN's class-dependent proposals of the training images. Each stage is a run folder under output.dir
(`rpn/`, `rcnn/`) with checkpoints that resume (model, optimizer, scheduler, iteration, torch RNG).
Under torchrun each process takes 1/world_size of the mini-batch and DistributedDataParallel averages the
gradients; the same code runs single-process without torchrun.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from detres.config import Config, SolverConfig, config_to_dict
from detres.data.image_io import read_image_rgb
from detres.data.loader import CheckedLoader
from detres.distributed import barrier, init_distributed, is_main_process, rank, resolve_device, world_size
from detres.engine.run_dir import prepare_run_dir
from detres.engine.solver import build_lr_scheduler, build_optimizer
from detres.errors import ConfigError, DataError
from detres.io.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, write_last_pointer
from detres.localization.build import build_loc_rcnn, build_per_class_rpn, rpn_checkpoint_path, stage_dir
from detres.localization.data import LocCropDataset, collate_crops, read_loc_split
from detres.localization.dense_testing import rpn_dense
from detres.localization.per_class_rpn import per_class_rpn_loss
from detres.localization.rcnn import BalancedRoIBatchSampler, RoICropDataset, label_proposals, rcnn_loss
from detres.modeling.matching import Matcher


def _check_dataset(cfg: Config, num_classes: int, where: str) -> None:
    if cfg.data.train.format != "imagenet_loc":
        raise ConfigError(f"data.train.format={cfg.data.train.format!r}: localization reads 'imagenet_loc'")
    if cfg.model.num_classes != num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but {where} lists {num_classes} classes; "
                          f"set model.num_classes={num_classes}")


def _stage_cfg(cfg: Config, stage: str) -> Config:
    return dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, dir=str(stage_dir(cfg, stage))))


def _infinite(loader: DataLoader) -> Iterator:
    epoch = 0
    while True:
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)  # a new shuffle each pass, the same on every process
        yield from loader
        epoch += 1


def _per_process(total: int, key: str) -> int:
    """The share of a global batch one process gets under torchrun."""
    if total % world_size():
        raise ConfigError(f"{key}={total} is not divisible by the {world_size()} processes; make it a multiple")
    return total // world_size()


def _wrap(model: nn.Module, device: torch.device) -> nn.Module:
    if world_size() == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _fit(cfg: Config, solver: SolverConfig, model: nn.Module, batches: Iterator, step: Callable, *, stage: str,
         resume: bool, class_map: dict, extra: dict | None = None) -> Path:
    """The shared SGD loop: step(model, batch) -> dict of losses; checkpoints every output.checkpoint_period."""
    run_cfg = _stage_cfg(cfg, stage)
    out = Path(run_cfg.output.dir)
    core = model.module if isinstance(model, DistributedDataParallel) else model
    main = is_main_process()
    last = prepare_run_dir(run_cfg, resume) if main else None
    barrier()  # the folder exists and was checked before any process reads or writes it
    if not main and resume:
        last = latest_checkpoint(out)
    optimizer = build_optimizer(model, solver)
    scheduler = build_lr_scheduler(optimizer, solver)
    start = 0
    if last is not None:
        state = load_checkpoint(last)
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = int(state["iteration"])
        if main:
            print(f"[{stage}] resumed from {last} at iteration {start}")
    writer = None
    if cfg.output.tensorboard and main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tb"))

    def save(name: str, iteration: int) -> None:
        if not main:
            return
        save_checkpoint({"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "iteration": iteration,
                         "config": config_to_dict(cfg), "class_map": class_map, "rng": torch.get_rng_state(),
                         "stage": stage, **(extra or {})}, out / name)
        write_last_pointer(out, name)

    model.train()
    tic = time.time()
    for it in range(start, solver.max_iter):
        losses = step(model, next(batches))
        total = sum(losses.values())
        losses = {k: v.detach() for k, v in losses.items()}
        if not torch.isfinite(total):
            if solver.nan_policy == "skip":
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                continue
            raise FloatingPointError(f"[{stage}] non-finite loss at iteration {it}: "
                                     f"{ {k: float(v) for k, v in losses.items()} }; lower solver.base_lr")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if solver.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), solver.clip_grad_norm)
        optimizer.step()
        scheduler.step()
        if main and ((it + 1) % cfg.output.log_period == 0 or it + 1 == solver.max_iter):
            text = " ".join(f"{k}={float(v):.4f}" for k, v in losses.items())
            print(f"[{stage}] iter {it + 1}/{solver.max_iter} loss={float(total.detach()):.4f} {text} "
                  f"lr={optimizer.param_groups[0]['lr']:.2e} {time.time() - tic:.0f}s", flush=True)
            if writer is not None:
                for k, v in losses.items():
                    writer.add_scalar(f"{stage}/{k}", float(v), it + 1)
        if cfg.output.checkpoint_period > 0 and (it + 1) % cfg.output.checkpoint_period == 0 \
                and it + 1 < solver.max_iter:
            save(f"model_{it + 1:07d}.pth", it + 1)
    save("model_final.pth", solver.max_iter)
    barrier()
    if writer is not None:
        writer.close()
    return out / "model_final.pth"


def train_rpn(cfg: Config, *, resume: bool = False) -> Path:
    """Train the per-class RPN (8 anchors per crop at 1:1, gt-class outputs only); returns model_final.pth."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    distributed = init_distributed(device)
    records, class_map = read_loc_split(cfg.data.train.root, cfg.data.train.split or "train")
    _check_dataset(cfg, len(class_map.names), cfg.data.train.root)
    inp = cfg.data.input
    if inp.resize_range[0] < inp.crop_size:
        raise ConfigError(f"data.input.resize_range={list(inp.resize_range)} starts below crop_size={inp.crop_size};"
                          " the shorter side must be at least the crop")
    dataset = LocCropDataset(records, crop_size=inp.crop_size, resize_range=tuple(inp.resize_range), flip=inp.flip,
                             pixel_mean=cfg.model.backbone.pixel_mean, pixel_std=cfg.model.backbone.pixel_std,
                             max_pixels=inp.max_pixels)
    generator = torch.Generator().manual_seed(cfg.seed)
    sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.seed, drop_last=True) if distributed else None
    loader = CheckedLoader(dataset, batch_size=_per_process(cfg.solver.ims_per_batch, "solver.ims_per_batch"),
                           shuffle=sampler is None, sampler=sampler, drop_last=True, num_workers=cfg.data.num_workers,
                           collate_fn=collate_crops, generator=generator, persistent_workers=cfg.data.num_workers > 0,
                           timeout=cfg.data.loader_timeout)
    predictor = build_per_class_rpn(cfg)
    model = _wrap(predictor.model.to(device), device)
    rpn = cfg.model.rpn
    matcher = Matcher(high=rpn.fg_iou_thresh, low=rpn.bg_iou_thresh, allow_low_quality=True)
    anchors_cache: dict[tuple[int, int], torch.Tensor] = {}

    def step(model: nn.Module, batch) -> dict:
        images, boxes, labels = batch
        logits, deltas, feat_hw = model(images.to(device))
        if feat_hw not in anchors_cache:
            anchors_cache[feat_hw] = predictor.anchor_generator.grid(*feat_hw, device)
        # Crop-crossing anchors are kept: an object filling a crop is best matched by anchors that cross it.
        return per_class_rpn_loss(logits, deltas, anchors_cache[feat_hw], [b.to(device) for b in boxes],
                                  labels, matcher=matcher, coder=predictor.coder,
                                  anchors_per_image=cfg.loc.anchors_per_image,
                                  positive_fraction=cfg.loc.positive_fraction, smooth_l1_beta=rpn.smooth_l1_beta)

    return _fit(cfg, cfg.solver, model, _infinite(loader), step, stage="rpn", resume=resume,
                class_map=class_map.to_dict())


def compute_proposals(cfg: Config, records, *, device: torch.device) -> list[np.ndarray]:
    """The trained RPN's top loc.proposals_per_class boxes for each record's gt class (dense testing):
    a list of [K, 4] float32 arrays in original-image pixels (empty for records without boxes)."""
    predictor = build_per_class_rpn(cfg)
    state = load_checkpoint(rpn_checkpoint_path(cfg))
    predictor.model.load_state_dict(state["model"])
    predictor.model.to(device).eval()
    out = []
    for rec in records:
        if len(rec.boxes) == 0:
            out.append(np.zeros((0, 4), np.float32))
            continue
        rgb = read_image_rgb(rec.image_path, max_pixels=cfg.data.input.max_pixels)
        props = rpn_dense(predictor, rgb, [rec.label], scales=list(cfg.loc.test_scales),
                          max_size=cfg.data.input.max_size, pixel_mean=cfg.model.backbone.pixel_mean,
                          pixel_std=cfg.model.backbone.pixel_std, pre_nms_topk=cfg.loc.pre_nms_topk,
                          nms_thresh=cfg.loc.nms_thresh, topk=cfg.loc.proposals_per_class)
        out.append(props[rec.label][0].cpu().numpy())
    return out


def train_rcnn(cfg: Config, *, resume: bool = False) -> Path:
    """Train the R-CNN on warped class-dependent proposals (plus the gt boxes), RoI-centric mini-batches."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    init_distributed(device)
    records, class_map = read_loc_split(cfg.data.train.root, cfg.data.train.split or "train")
    _check_dataset(cfg, len(class_map.names), cfg.data.train.root)
    proposals_file = stage_dir(cfg, "rcnn") / "proposals.pt"  # not *.pth: run_dir treats those as checkpoints
    if resume and proposals_file.is_file():
        proposals = [p.numpy() for p in load_checkpoint(proposals_file)["proposals"]]
    else:
        t0 = time.time()
        proposals = compute_proposals(cfg, records, device=device)
        if is_main_process():
            print(f"[rcnn] proposals for {len(records)} training images in {time.time() - t0:.0f}s", flush=True)
    _, coder = build_loc_rcnn(cfg)
    entries = []
    for i, (rec, props) in enumerate(zip(records, proposals)):
        if len(rec.boxes) == 0:
            continue
        gt = torch.from_numpy(rec.boxes)
        candidates = torch.cat([torch.from_numpy(props).reshape(-1, 4), gt])  # gt boxes are proposals too
        keep, labels, targets = label_proposals(candidates, gt, rec.label, fg_iou=cfg.loc.rcnn_fg_iou,
                                                bg_iou_lo=cfg.loc.rcnn_bg_iou_lo, coder=coder)
        for k, lab, tgt in zip(keep.tolist(), labels.tolist(), targets.numpy()):
            entries.append((i, candidates[k].numpy(), lab, tgt))
    if not entries:
        raise DataError("no R-CNN training RoIs: no training image has boxes")
    inp = cfg.data.input
    dataset = RoICropDataset(records, entries, size=cfg.loc.rcnn_input_size, flip=inp.flip,
                             pixel_mean=cfg.model.backbone.pixel_mean, pixel_std=cfg.model.backbone.pixel_std,
                             max_pixels=inp.max_pixels, cache_images=cfg.data.num_workers == 0)
    solver = dataclasses.replace(cfg.solver, max_iter=cfg.loc.rcnn_max_iter or cfg.solver.max_iter,
                                 steps=list(cfg.loc.rcnn_steps) or list(cfg.solver.steps))
    # each process draws its own share of every mini-batch (its own seed), as RoI-centric sampling allows
    sampler = BalancedRoIBatchSampler(dataset.labels(), batch_size=_per_process(cfg.loc.rcnn_batch_size,
                                      "loc.rcnn_batch_size"), fg_fraction=cfg.loc.rcnn_fg_fraction,
                                      num_batches=solver.max_iter, seed=cfg.seed + 1000 * rank())
    loader = CheckedLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                           timeout=cfg.data.loader_timeout)
    fg = int((dataset.labels() > 0).sum())
    if is_main_process():
        print(f"[rcnn] {len(entries)} RoIs ({fg} foreground) from {len(records)} images", flush=True)
    model, _ = build_loc_rcnn(cfg)
    model = _wrap(model.to(device), device)

    def step(model: nn.Module, batch) -> dict:
        crops, labels, targets = batch
        logits, deltas = model(crops.to(device))
        return rcnn_loss(logits, deltas, labels.to(device), targets.to(device),
                         smooth_l1_beta=cfg.model.roi_head.smooth_l1_beta)

    stage_dir(cfg, "rcnn").mkdir(parents=True, exist_ok=True)
    if is_main_process() and not proposals_file.is_file():
        save_checkpoint({"proposals": [torch.from_numpy(p) for p in proposals]}, proposals_file)
    return _fit(cfg, solver, model, _infinite(loader), step, stage="rcnn", resume=resume,
                class_map=class_map.to_dict())
