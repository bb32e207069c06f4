"""Detection training: iteration-based SGD with warm-up and steps, atomic checkpoints, exact resume, DDP.

Exact resume: the batch order is a pure function of (seed, epoch) and the augmentation of (seed, epoch,
index); a checkpoint holds the iteration and the RNG states, so a resumed run skips the batches already
seen and draws the same RoI samples as an uninterrupted run. SIGINT/SIGTERM write a checkpoint first.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from detres import distributed as dist
from detres.config import Config, config_to_dict, save_config
from detres.data.detection import DetectionDataset, build_split
from detres.data.formats import coco_gt_file
from detres.data.loader import build_detection_loader
from detres.data.proposals import ProposalDataset
from detres.data.train_scales import train_scale_choices
from detres.engine.inference import run_inference
from detres.engine.run_dir import prepare_run_dir
from detres.engine.solver import build_lr_scheduler, build_optimizer
from detres.engine.tiled_inference import run_tiled_inference
from detres.errors import UserError
from detres.evaluation.coco import check_coco_backend
from detres.evaluation.evaluate import default_metrics, evaluate_detections
from detres.evaluation.metrics_file import write_metrics
from detres.io.checkpoint import load_checkpoint, save_checkpoint, write_last_pointer
from detres.modeling.faster_rcnn import FasterRCNN, build_faster_rcnn
from detres.modeling.finetune import load_detector_weights, read_class_name_map

log = logging.getLogger("detres.train")
CALIBRATION_BATCHES = 4  # batches of training images for recomputing BN statistics of a from-scratch backbone


class NonFiniteLossError(UserError):
    """A NaN or infinite loss; training stops and the last checkpoint is left as it was."""


def build_datasets(cfg: Config) -> tuple[DetectionDataset, DetectionDataset]:
    mean, std = cfg.model.backbone.pixel_mean, cfg.model.backbone.pixel_std
    train = build_split(cfg.data, "train", pixel_mean=mean, pixel_std=std, train=True, seed=cfg.seed)
    train.set_train_scales(*train_scale_choices(cfg.data.input, cfg.test.pyramid_scales))
    test = build_split(cfg.data, "test", pixel_mean=mean, pixel_std=std, train=False, seed=cfg.seed)
    if cfg.model.num_classes == 0:  # "from the dataset": the resolved count is what the checkpoint's config holds
        cfg.model.num_classes = len(train.class_map)
        log.info("model.num_classes=0: %d classes from the training set (%s)", cfg.model.num_classes,
                 ", ".join(train.class_map.names))
    if len(train.class_map) != cfg.model.num_classes:
        raise UserError(f"model.num_classes={cfg.model.num_classes} but the training set has "
                        f"{len(train.class_map)} classes ({', '.join(train.class_map.names[:5])}...); "
                        f"set model.num_classes={len(train.class_map)}")
    return train, test


def eval_loader(cfg: Config, dataset: DetectionDataset, distributed: bool = False):
    return build_detection_loader(dataset, batch_size=cfg.test.ims_per_batch, train=False,
                                  num_workers=cfg.data.num_workers, aspect_ratio_grouping=False, seed=cfg.seed,
                                  distributed=distributed, timeout=cfg.data.loader_timeout)


def _calibration_batches(dataset: DetectionDataset, cfg: Config) -> list[torch.Tensor]:
    """A few padded batches of training images, for BN statistics of a backbone trained from scratch."""
    from detres.data.batching import pad_images

    rng = np.random.default_rng(cfg.seed)
    picks = rng.permutation(len(dataset))[: CALIBRATION_BATCHES * 4]
    images = [dataset[int(i)][0] for i in picks]
    return [pad_images(images[i:i + 4], cfg.data.input.size_divisibility)[0] for i in range(0, len(images), 4)]


def build_model_for_training(cfg: Config, train_set: DetectionDataset) -> FasterRCNN:
    if cfg.model.weights:  # fine-tuning a detector: its weights replace the fresh ones where they fit
        model = build_faster_rcnn(cfg)
        load_detector_weights(model, cfg.model.weights, class_names=train_set.class_map.names,
                              name_map=read_class_name_map(cfg.model.class_name_map))
        return model
    if cfg.model.backbone.weights:
        return build_faster_rcnn(cfg)
    log.info("no backbone weights: recomputing BN statistics of the fresh backbone on training images")
    batches = _calibration_batches(train_set, cfg)
    return build_faster_rcnn(cfg, calibration_images=batches, calibration_batches=len(batches))


def training_layout(model: FasterRCNN, cfg: Config) -> FasterRCNN:
    """The model in the memory layout it trains in: channels-last with `solver.channels_last` (the same function;
    oneDNN's and cuDNN's convolutions run faster forward and backward in NHWC: R-50 C4 on CPU 6.3 -> 5.6 s/step)."""
    return model.to(memory_format=torch.channels_last) if cfg.solver.channels_last else model


def _rng_state() -> dict:
    # tensors only: checkpoints are loaded with weights_only=True, which refuses numpy arrays
    return {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
            "python": torch.tensor(random.getstate()[1], dtype=torch.int64)}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop writes a checkpoint at the current iteration and returns."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class TrainingPlan:
    """What one Trainer run trains: the joint detector (the default), or one step of step-wise training."""

    trains: str = "joint"  # joint | rpn | rcnn: the losses of the run (FasterRCNN.set_training_step)
    fixed: tuple[str, ...] = ()  # parts kept fixed (no gradient, BN statistics kept), e.g. ("trunk",)
    init: dict[str, Path] = field(default_factory=dict)  # part (trunk, rpn, roi_head) -> checkpoint to start it from
    proposals: dict | None = None  # image_id (str) -> [K, 4] original-pixel proposals for an rcnn run
    evaluate: bool = True  # evaluate at the end (and every output.eval_period)


def load_parts(model: FasterRCNN, init: dict[str, Path]) -> None:
    """Each named part's weights from its checkpoint (the run's other parts keep their own initialization)."""
    for part, path in init.items():
        weights = load_checkpoint(path)["model"]
        prefix = f"{part}."
        getattr(model, part).load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
        log.info("%s initialized from %s", part, path)


class Trainer:
    """Owns the model, optimizer, schedule and data of one detection run."""

    def __init__(self, cfg: Config, *, resume: bool = False, plan: TrainingPlan | None = None) -> None:
        self.plan = plan = plan or TrainingPlan()
        self.cfg = cfg
        self.device = dist.resolve_device(cfg.device)
        self.distributed = dist.init_distributed(self.device)
        self.main = dist.is_main_process()
        resume_from = prepare_run_dir(cfg, resume) if self.main else None
        if resume and not self.main:
            resume_from = Path(cfg.output.dir) / (Path(cfg.output.dir) / "last_checkpoint").read_text().strip()
        self.out = Path(cfg.output.dir)
        if "coco" in self.metric_names:  # a bad test.coco_backend fails now, not after training
            check_coco_backend(cfg.test.coco_backend)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.train_set, self.test_set = build_datasets(cfg)
        if self.main:  # again, with what the datasets resolved (model.num_classes: 0)
            save_config(cfg, self.out / "config.yaml")
        if (plan.trains == "rcnn") != (plan.proposals is not None):
            raise ValueError("a TrainingPlan trains 'rcnn' exactly when it gives proposals")
        model = build_model_for_training(cfg, self.train_set)
        load_parts(model, plan.init)
        model.set_training_step(trains=plan.trains, fixed=plan.fixed)
        if plan.proposals is not None:
            self.train_set = ProposalDataset(dataset=self.train_set, proposals=plan.proposals)
        self.model = training_layout(model.to(self.device), cfg)
        self.optimizer = build_optimizer(self.model, cfg.solver)
        self.scheduler = build_lr_scheduler(self.optimizer, cfg.solver)
        self.iteration = 0
        self.skipped_steps = 0
        if resume_from is not None:
            self._restore(resume_from)
        per_process = cfg.solver.ims_per_batch // dist.world_size()
        if per_process < 1 or cfg.solver.ims_per_batch % dist.world_size():
            raise UserError(f"solver.ims_per_batch={cfg.solver.ims_per_batch} must be a multiple of the "
                            f"{dist.world_size()} processes")
        self.loader = build_detection_loader(self.train_set, batch_size=per_process, train=True,
                                             num_workers=cfg.data.num_workers,
                                             aspect_ratio_grouping=cfg.data.aspect_ratio_grouping, seed=cfg.seed,
                                             distributed=self.distributed, timeout=cfg.data.loader_timeout,
                                             batch_scales=self.train_set.batch_scales)
        if len(self.loader.batch_sampler._batches()) == 0:
            raise UserError(f"the training set ({len(self.train_set)} images) is smaller than one batch of "
                            f"{per_process}; lower solver.ims_per_batch")
        self.net = DistributedDataParallel(self.model) if self.distributed else self.model
        self.writer = self._tensorboard() if self.main else None

    @property
    def metric_names(self) -> list[str]:
        """test.eval_metrics, or the test set format's defaults."""
        return self.cfg.test.eval_metrics or default_metrics(self.cfg.data.test.format)

    # --- checkpoints ---------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "iteration": self.iteration,
                "config": config_to_dict(self.cfg), "class_map": self.train_set.class_map.to_dict(),
                "rng": _rng_state(), "skipped_steps": self.skipped_steps}

    def save(self, name: str) -> Path | None:
        if not self.main:
            return None
        path = save_checkpoint(self.state(), self.out / name)
        write_last_pointer(self.out, name)
        log.info("checkpoint %s (iteration %d)", path, self.iteration)
        return path

    def _restore(self, path: Path) -> None:
        state = load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.iteration = int(state["iteration"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        _set_rng_state(state["rng"])
        log.info("resumed from %s at iteration %d", path, self.iteration)

    # --- the loop ------------------------------------------------------------------------------------
    def batches(self) -> Iterator[tuple[list, list]]:
        """Batches from the current iteration on, epoch after epoch (resume skips the seen part of an epoch)."""
        per_epoch = len(self.loader.batch_sampler._batches())
        epoch, skip = divmod(self.iteration, per_epoch)
        while True:
            self.loader.batch_sampler.set_epoch(epoch, skip)
            self.train_set.set_epoch(epoch)
            for images, targets, _ in self.loader:
                yield images, targets
            epoch, skip = epoch + 1, 0

    def step(self, images: list, targets: list) -> dict[str, float]:
        images = [im.to(self.device) for im in images]
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
        amp = self.cfg.solver.amp
        dtype = torch.bfloat16 if self.device.type == "cpu" else torch.float16
        with torch.autocast(self.device.type, dtype=dtype, enabled=amp):
            losses = self.net(images, targets)
        total = sum(losses.values())
        values = {k: float(v.detach()) for k, v in losses.items()}
        if not torch.isfinite(total):
            if self.cfg.solver.nan_policy == "skip":
                self.skipped_steps += 1
                log.warning("iteration %d: non-finite loss %s, step skipped (%d so far)", self.iteration, values,
                            self.skipped_steps)
                return values
            terms = ", ".join(f"{k}={v}" for k, v in values.items())
            raise NonFiniteLossError(f"non-finite loss at iteration {self.iteration}: {terms}. Training stopped; the "
                                f"last checkpoint in {self.out} is intact. Lower solver.base_lr or add warm-up "
                                "(solver.warmup_iters), or set solver.nan_policy=skip")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.cfg.solver.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.solver.clip_grad_norm)
        self.optimizer.step()
        return values

    def train(self) -> dict[str, float]:
        """Run to solver.max_iter (or until a signal), evaluate at the end; returns the final metrics."""
        cfg = self.cfg
        start, tic = self.iteration, time.perf_counter()
        with _StopFlag() as stop:
            for images, targets in self.batches():
                if self.iteration >= cfg.solver.max_iter:
                    break
                values = self.step(images, targets)
                self.scheduler.step()
                self.iteration += 1
                if self.main and (self.iteration % cfg.output.log_period == 0 or self.iteration == cfg.solver.max_iter):
                    self._log(values, start, tic)
                if stop.signal is not None:
                    self.save(f"model_{self.iteration:07d}.pth")
                    log.warning("signal %d: checkpoint written at iteration %d, exiting", stop.signal, self.iteration)
                    raise KeyboardInterrupt
                if self.iteration % cfg.output.checkpoint_period == 0 and self.iteration < cfg.solver.max_iter:
                    self.save(f"model_{self.iteration:07d}.pth")
                if cfg.output.eval_period and self.iteration % cfg.output.eval_period == 0 and self.plan.evaluate:
                    self.evaluate()
        self.save("model_final.pth")
        metrics = self.evaluate() if self.plan.evaluate else {}
        if self.writer:
            self.writer.close()
        return metrics

    def _log(self, values: dict[str, float], start: int, tic: float) -> None:
        done = self.iteration - start
        speed = done / max(time.perf_counter() - tic, 1e-9)
        eta = (self.cfg.solver.max_iter - self.iteration) / max(speed, 1e-9)
        lr = self.optimizer.param_groups[0]["lr"]
        terms = " ".join(f"{k}={v:.4f}" for k, v in values.items())
        log.info("iter %d/%d  %s  lr=%.5f  %.2f it/s  eta %dm%02ds", self.iteration, self.cfg.solver.max_iter,
                 terms, lr, speed, eta // 60, eta % 60)
        if self.writer:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, self.iteration)
            self.writer.add_scalar("train/total_loss", sum(values.values()), self.iteration)
            self.writer.add_scalar("train/lr", lr, self.iteration)

    def evaluate(self) -> dict[str, float]:
        """Metrics of the current model on the test set (every process infers its shard; rank 0 scores)."""
        if self.cfg.test.tile_size:  # large test images: tiled, as `detres test` runs them (rank 0 alone)
            detections = run_tiled_inference(self.model, self.test_set, self.cfg, self.device,
                                             show_progress=False) if self.main else {}
        else:
            detections = run_inference(self.model, eval_loader(self.cfg, self.test_set, self.distributed),
                                       device=self.device)
        self.model.train()
        if not self.main:
            return {}
        metrics = evaluate_detections(self.test_set, detections, self.metric_names,
                                      coco_gt_file(self.cfg.data.test),
                                      coco_backend=self.cfg.test.coco_backend)
        write_metrics(metrics, self.out / "metrics.json")
        if self.writer:
            for key, value in metrics.items():
                if key.count("/") == 1 and value == value:
                    self.writer.add_scalar(f"eval/{key}", value, self.iteration)
            self._draw_predictions(detections)
        return metrics

    def _draw_predictions(self, detections: dict) -> None:
        from detres.data.image_io import read_image_rgb
        from detres.vis import draw_detections

        for rec in self.test_set.records[: self.cfg.output.vis_images]:
            det = detections.get(rec.image_id)
            if det is None:
                continue
            keep = det["scores"] >= 0.5
            image = draw_detections(read_image_rgb(rec.image_path), det["boxes"][keep], det["scores"][keep],
                                    det["labels"][keep], self.test_set.class_map.names)
            self.writer.add_image(f"val/{Path(rec.image_path).name}", image, self.iteration, dataformats="HWC")

    def _tensorboard(self):
        if not self.cfg.output.tensorboard:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.out / "tb"))
