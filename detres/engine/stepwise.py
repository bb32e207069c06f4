"""Step-wise training (`solver.mode=stepwise`): Faster R-CNN's 4-step alternating training (Ren et al. 2015), the
recipe of the paper's App. A, as four Trainer runs in sub-folders of output.dir:

  step1_rpn   RPN (with the trunk) from the classification initialization; RPN losses only.
  step2_rcnn  Fast R-CNN (with a fresh trunk) from the classification initialization, on step 1's proposals.
  step3_rpn   the RPN re-trained on step 2's trunk, the shared layers (conv1..conv4_x) fixed; its RPN layers start
              from step 1's (Ren et al.: "only fine-tune the layers unique to RPN").
  step4_rcnn  Fast R-CNN (conv5_x and the sibling layers) fine-tuned from step 2's on step 3's proposals, the shared
              layers fixed.

Steps 1 and 3 use `solver.rpn_step` (iterations, lr, steps, images per batch), 2 and 4 `solver.rcnn_step`; everything
else comes from `solver`. Proposals for steps 2 and 4 are computed once after steps 1 and 3 (detres.engine.
proposal_store: output.dir/step1_proposals.pt, step3_proposals.pt) from the eval-mode RPN at data.input.test_scale
with the training counts (model.rpn.pre/post_nms_topk_train). Each step is an ordinary run folder with its own
checkpoints, so `--resume` continues inside any step exactly as a joint run does; finished steps are skipped. The
result, output.dir/model_final.pth, is one detector (step 3's RPN, step 4's head, the shared trunk) for every tool.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from detres import distributed as dist
from detres.config import Config, config_to_dict, load_config, save_config
from detres.data.augment import box_dependent_transforms, build_augment
from detres.data.detection import DetectionDataset
from detres.engine.loading import load_detector
from detres.engine.proposal_store import dataset_identity, ensure_proposals, weights_identity
from detres.engine.trainer import Trainer, TrainingPlan, build_datasets, eval_loader
from detres.errors import ConfigError, UserError
from detres.evaluation.metrics_file import write_metrics
from detres.io.atomic import write_atomic
from detres.io.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, write_last_pointer

log = logging.getLogger("detres.train")
FINAL = "model_final.pth"


@dataclass(frozen=True)
class Step:
    """One of the four steps: its folder, what it trains, what stays fixed."""

    number: int
    name: str
    trains: str  # rpn | rcnn
    fixed: tuple[str, ...] = ()


STEPS = (Step(1, "step1_rpn", "rpn"), Step(2, "step2_rcnn", "rcnn"),
         Step(3, "step3_rpn", "rpn", ("trunk",)), Step(4, "step4_rcnn", "rcnn", ("trunk",)))


def step_config(cfg: Config, step: Step) -> Config:
    """The run config of one step: its schedule from solver.rpn_step / solver.rcnn_step, its own sub-folder."""
    schedule = cfg.solver.rpn_step if step.trains == "rpn" else cfg.solver.rcnn_step
    out = copy.deepcopy(cfg)
    out.solver = replace(out.solver, max_iter=schedule.max_iter, base_lr=schedule.base_lr, steps=list(schedule.steps),
                         ims_per_batch=schedule.ims_per_batch, warmup_iters=schedule.warmup_iters)
    out.output.dir = str(Path(cfg.output.dir) / step.name)
    return out


def proposal_file(cfg: Config, step: Step) -> Path:
    """Where the proposals made by RPN step `step` (1 or 3) are stored."""
    return Path(cfg.output.dir) / f"step{step.number}_proposals.pt"


def _final(cfg: Config, step: Step) -> Path:
    return Path(cfg.output.dir) / step.name / FINAL


def _plan(cfg: Config, step: Step, proposals: dict | None) -> TrainingPlan:
    s1, s2, s3 = (_final(cfg, s) for s in STEPS[:3])
    init = {1: {}, 2: {}, 3: {"trunk": s2, "roi_head": s2, "rpn": s1},
            4: {"trunk": s3, "rpn": s3, "roi_head": s3}}[step.number]
    return TrainingPlan(trains=step.trains, fixed=step.fixed, init=init, proposals=proposals,
                        evaluate=step.number == 4)


def _proposals_for(cfg: Config, producer: Step, device) -> dict:
    """The verified proposals of RPN step `producer` on the training set (computed once, then read)."""
    train_set = build_datasets(cfg)[0]
    records = train_set.records
    # the training images, unflipped at the test scale (proposals are stored in original pixels)
    images = DetectionDataset(records=records, class_map=train_set.class_map, input_cfg=cfg.data.input,
                              pixel_mean=cfg.model.backbone.pixel_mean, pixel_std=cfg.model.backbone.pixel_std,
                              train=False)
    ckpt = _final(cfg, producer)
    rc = cfg.model.rpn
    topk = (rc.pre_nms_topk_train, rc.post_nms_topk_train)
    identity = {"checkpoint": weights_identity(load_checkpoint(ckpt)["model"]), "dataset": dataset_identity(records),
                "settings": {"scale": cfg.data.input.test_scale, "max_size": cfg.data.input.max_size,
                             "topk": list(topk), "nms_thresh": rc.nms_thresh, "min_box_size": rc.min_box_size}}
    return ensure_proposals(proposal_file(cfg, producer), model_fn=lambda: load_detector(ckpt)[0].to(device),
                            loader=eval_loader(cfg, images, dist.world_size() > 1), identity=identity, topk=topk,
                            device=device)


def _prepare(cfg: Config, resume: bool) -> Path:
    """Create output.dir (config.yaml in it); refuse a used folder without --resume and --resume with nothing."""
    out = Path(cfg.output.dir)
    used = out.exists() and (any(out.glob("*.pth")) or any(latest_checkpoint(out / s.name) for s in STEPS))
    if resume and not used:
        raise UserError(f"--resume: no step-wise run in {out} (no checkpoint in {out}/step*_*/); "
                        "drop --resume to start a new run")
    if not resume and used:
        raise UserError(f"run folder {out} already holds checkpoints; pass --resume to continue it, "
                        "or choose another output.dir=... to start a new run")
    if resume and (out / "config.yaml").is_file():
        _check_same_recipe(cfg, load_config(out / "config.yaml"), out)
    if dist.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    return out


def _check_same_recipe(cfg: Config, stored: Config, out: Path) -> None:
    """A resumed run must build and schedule its remaining steps as the run began them (a step that starts after
    the resume takes its initialization from model.backbone.weights: dropping it would start from scratch)."""
    for section in ("model", "solver"):
        now, then = config_to_dict(cfg)[section], config_to_dict(stored)[section]
        diff = [k for k in _flat(now) if _flat(now)[k] != _flat(then).get(k)]
        if diff:
            key = f"{section}.{diff[0]}"
            raise UserError(f"--resume: {key}={_flat(now)[diff[0]]!r} but the run in {out} was started with "
                            f"{key}={_flat(then).get(diff[0])!r} ({out / 'config.yaml'}); pass the same settings")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def _record_time(out: Path, step: Step, seconds: float) -> None:
    """Add a step's wall time (this session's part of it) to output.dir/stepwise_time.json."""
    path = out / "stepwise_time.json"
    times = json.loads(path.read_text()) if path.is_file() else {}
    times[step.name] = round(times.get(step.name, 0.0) + seconds, 2)
    write_atomic(path, json.dumps(times, indent=2))


def check_stepwise_augment(cfg: Config) -> None:
    """The Fast R-CNN steps carry their stored proposals through data.augment as boxes (detres.data.augment), which
    is exact for every transform whose draw ignores the boxes; one whose draw reads them (a box-safe crop) would crop
    differently with the proposals there, so that combination is refused before step 1."""
    pipeline = build_augment(list(cfg.data.augment), min_visibility=cfg.data.augment_min_visibility)
    names = box_dependent_transforms(pipeline)
    if names:
        raise ConfigError(f"solver.mode=stepwise with {names[0]} in data.augment: its draw reads the boxes, and the "
                          "Fast R-CNN steps move their stored proposals through data.augment as boxes, so it would "
                          f"crop around the proposals too. Remove {names[0]} from data.augment (a crop that ignores "
                          "the boxes, e.g. RandomResizedCrop, works) or use solver.mode=joint")


def train_stepwise(cfg: Config, *, resume: bool = False) -> dict[str, float]:
    """Run (or continue) the four steps; returns the final detector's metrics (empty on non-main processes)."""
    check_stepwise_augment(cfg)
    device = dist.resolve_device(cfg.device)
    dist.init_distributed(device)
    try:
        out = _prepare(cfg, resume)
        dist.barrier()
        metrics: dict[str, float] = {}
        for step in STEPS:
            if step.number < 4 and _final(cfg, step).is_file():
                log.info("step %d (%s) finished earlier: skipped", step.number, step.name)
                continue
            tic = time.perf_counter()
            proposals = _proposals_for(cfg, STEPS[step.number - 2], device) if step.trains == "rcnn" else None
            scfg = step_config(cfg, step)
            log.info("step %d (%s): %s, %d iterations, %d images per batch, fixed: %s", step.number, step.name,
                     step.trains, scfg.solver.max_iter, scfg.solver.ims_per_batch, ", ".join(step.fixed) or "-")
            trainer = Trainer(scfg, resume=latest_checkpoint(scfg.output.dir) is not None,
                              plan=_plan(cfg, step, proposals))
            metrics = trainer.train()
            dist.barrier()  # rank 0 has written the step's model_final.pth that the next step reads
            if dist.is_main_process():
                _record_time(out, step, time.perf_counter() - tic)
        if dist.is_main_process():
            _write_final(cfg, out, metrics)
        dist.barrier()
        return metrics
    finally:
        dist.cleanup()


def _write_final(cfg: Config, out: Path, metrics: dict[str, float]) -> None:
    """output.dir/model_final.pth: step 4's detector with the run's config, loadable by every tool."""
    state = load_checkpoint(_final(cfg, STEPS[-1]))
    final = {"model": state["model"], "config": config_to_dict(cfg), "class_map": state["class_map"],
             "iteration": state["iteration"], "stepwise_steps": [s.name for s in STEPS]}
    save_checkpoint(final, out / FINAL)
    write_last_pointer(out, FINAL)
    if metrics:
        write_metrics(metrics, out / "metrics.json")
    log.info("step-wise training finished: %s", out / FINAL)
