"""Building trained detectors back from checkpoints (tools: test, infer, ablation, benchmark)."""

from __future__ import annotations

import os

from detres.config import Config, config_from_dict
from detres.data.records import ClassMap
from detres.deploy.option_policy import merge_model_keys
from detres.errors import CheckpointError
from detres.io.checkpoint import load_checkpoint
from detres.modeling.fast_inference import optimize_for_inference
from detres.modeling.faster_rcnn import FasterRCNN, build_faster_rcnn


def load_detector(path: str | os.PathLike, cfg: Config | None = None, *,
                  optimize: bool = False) -> tuple[FasterRCNN, ClassMap, Config]:
    """(model in eval mode, class map, config) from a detection checkpoint.

    optimize: inference only — frozen BN folded into the convs and channels-last weights (same detections to
    ~1e-5, faster; see BENCHMARKS.md). Such a model must not be trained or saved.

    The model is built from the checkpoint's own config (its architecture), with the test-time settings of `cfg`
    when given (its test, data and deploy sections and the test-time model keys of detres.deploy.option_policy),
    so a checkpoint always loads into the network that wrote it; an architecture key of `cfg` that differs from the
    checkpoint's is refused.
    """
    state = load_checkpoint(path)
    missing = [k for k in ("model", "config", "class_map") if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a detres detection checkpoint (missing {', '.join(missing)})")
    stored = config_from_dict(state["config"])
    if cfg is not None:
        merge_model_keys(cfg, stored, where=f"checkpoint {path}")
        stored.test, stored.data, stored.deploy = cfg.test, cfg.data, cfg.deploy
    stored.model.backbone.weights = ""  # the checkpoint holds every weight
    model = build_faster_rcnn(stored)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model of its config: {str(exc)[:300]}") from None
    model.eval()
    if optimize:
        model = optimize_for_inference(model).model
    return model, ClassMap.from_dict(state["class_map"]), stored
