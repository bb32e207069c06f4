"""Fine-tuning a detector from a detector (`model.weights`): shared layers load, predictor rows follow class names.

The paper fine-tunes its COCO model on PASCAL VOC (App. B, Tables 10-11). Every tensor of the new model whose name
and shape match the checkpoint's is copied. The class-specific predictor rows (cls_score row j, bbox_pred rows
4j..4j+3 for class j; row 0 is background and is always kept) are copied by class name, through an optional name
map {new name: old name}; rows of classes the old model did not know keep the model's own fresh initialization.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from detres.errors import CheckpointError, ConfigError
from detres.io.checkpoint import load_checkpoint

log = logging.getLogger("detres.modeling")

PREDICTOR = "roi_head.predictor."
ROWS_PER_CLASS = {"cls_score.weight": 1, "cls_score.bias": 1, "bbox_pred.weight": 4, "bbox_pred.bias": 4}


@dataclass
class FineTuneReport:
    """What `load_detector_weights` did, by state-dict key and class name."""

    loaded: list[str] = field(default_factory=list)  # tensors copied whole
    remapped: dict[str, str] = field(default_factory=dict)  # new class name -> old class name whose rows it took
    new_classes: list[str] = field(default_factory=list)  # classes with freshly initialized rows
    reinitialized: list[str] = field(default_factory=list)  # tensors that kept the model's own initialization
    unused: list[str] = field(default_factory=list)  # tensors of the file the model has no place for


def read_class_name_map(path: str | os.PathLike) -> dict[str, str]:
    """{new class name: class name in the checkpoint} from a YAML mapping file (model.class_name_map); "" -> {}."""
    if not path:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.class_name_map: file not found: {path} (a YAML mapping, e.g. aeroplane: airplane)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"model.class_name_map {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(f"model.class_name_map {path}: must map new class names to old ones, "
                          "one 'new name: old name' per line")
    return data


def class_sources(new_names: list[str], old_names: list[str], name_map: dict[str, str]) -> list[int | None]:
    """For each new class (label j = position + 1) the old label whose rows it takes, or None for a new class."""
    old_label = {name: i + 1 for i, name in enumerate(old_names)}
    wrong = sorted({v for k, v in name_map.items() if k in new_names and v not in old_label})
    if wrong:
        raise ConfigError(f"model.class_name_map maps to {', '.join(map(repr, wrong))}, which the checkpoint's "
                          f"classes do not include ({', '.join(old_names[:10])}...); fix the map's right-hand side")
    return [old_label.get(name_map.get(name, name)) for name in new_names]


def load_detector_weights(model: nn.Module, path: str | os.PathLike, *, class_names: list[str],
                          name_map: dict[str, str] | None = None) -> FineTuneReport:
    """Copy a detres detection checkpoint into `model` (built for `class_names`) as the module doc says; log and
    return what was loaded, remapped and re-initialized. CheckpointError for a file that is not a detector."""
    state = load_checkpoint(path)
    if not isinstance(state.get("model"), dict) or "class_map" not in state:
        raise CheckpointError(f"model.weights={path} is not a detres detection checkpoint (no model and class_map); "
                              "a classification network goes in model.backbone.weights")
    source = {k.removeprefix("module."): v for k, v in state["model"].items() if isinstance(v, torch.Tensor)}
    old_names = list(state["class_map"]["names"])
    sources = class_sources(class_names, old_names, name_map or {})
    report = FineTuneReport()
    own = model.state_dict()
    merged = {}
    for key, fresh in own.items():
        old = source.get(key)
        rows = ROWS_PER_CLASS.get(key.removeprefix(PREDICTOR)) if key.startswith(PREDICTOR) else None
        if rows is not None and old is not None and old.shape[1:] == fresh.shape[1:] \
                and old.shape[0] == rows * (len(old_names) + 1):
            merged[key] = _copy_rows(fresh, old, sources, rows)
        elif old is not None and old.shape == fresh.shape:
            merged[key] = old
            report.loaded.append(key)
        elif not key.endswith("num_batches_tracked"):
            report.reinitialized.append(key)
    if not report.loaded:
        raise CheckpointError(f"model.weights={path}: no tensor fits this model; is it a detector of another "
                              "architecture (model.backbone.depth/width)?")
    model.load_state_dict(merged, strict=False)
    report.unused = [k for k in source if k not in own and not k.endswith("num_batches_tracked")]
    report.remapped = {n: old_names[s - 1] for n, s in zip(class_names, sources) if s is not None}
    report.new_classes = [n for n, s in zip(class_names, sources) if s is None]
    if any(k.startswith(PREDICTOR) for k in report.reinitialized):
        report.remapped, report.new_classes = {}, list(class_names)  # feature width differs: no row could move
    _log(path, report, len(class_names))
    return report


def _copy_rows(fresh: torch.Tensor, old: torch.Tensor, sources: list[int | None], rows: int) -> torch.Tensor:
    """`fresh` with background's block and every mapped class's block of `rows` rows taken from `old`."""
    new_labels = [0] + [j for j, s in enumerate(sources, start=1) if s is not None]
    old_labels = [0] + [s for s in sources if s is not None]
    offsets = torch.arange(rows)
    dst = (torch.tensor(new_labels)[:, None] * rows + offsets).reshape(-1)
    src = (torch.tensor(old_labels)[:, None] * rows + offsets).reshape(-1)
    out = fresh.clone()
    out[dst] = old[src].to(out.dtype)
    return out


def _log(path: str | os.PathLike, report: FineTuneReport, num_classes: int) -> None:
    renamed = [f"{n}<-{o}" for n, o in report.remapped.items() if n != o]
    log.info("model.weights %s: loaded %d tensors; predictor rows of %d/%d classes copied by name%s; "
             "re-initialized: %d tensors%s, classes %s; %d tensors of the file unused%s", path, len(report.loaded),
             len(report.remapped), num_classes, f" (renamed: {', '.join(renamed)})" if renamed else "",
             len(report.reinitialized), f" ({', '.join(report.reinitialized[:8])})" if report.reinitialized else "",
             ", ".join(report.new_classes) or "none", len(report.unused),
             f" ({', '.join(report.unused[:8])})" if report.unused else "")
