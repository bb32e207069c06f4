"""The one options policy: for every test-time option and every backend, what that backend does with it.

- `computed`: the backend computes the option from the config at run time.
- `baked`: the value is fixed into the exported graph at export time; the export folder records it, and opening
  the folder with another value is refused (re-export with the value, or run test.backend=torch).
- `refused`: the backend cannot compute the option; a value other than its default is refused with an error that
  names it.
- `checkpoint`: part of the trained network: every backend runs the checkpoint's value, and another value is
  refused (architecture keys come from the checkpoint).
- `no effect`: the option changes no detection on that backend (a memory knob, an export-time setting).

The eager model is the `torch` column; every exported runtime runs the same graph, so one `graph` column covers
them all (what differs per runtime, the precisions it runs, lives in detres.deploy.runtimes). Every tool reaches this
table through `detres.engine.predictor.build_predictor`, `detres.engine.loading.load_detector` and
`detres.deploy.export.export_detector`; docs/deploy.md shows it as `policy_markdown()` renders it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from detres.config import Config, config_to_dict, default_config, flatten_dict
from detres.errors import ConfigError

log = logging.getLogger("detres.options")

COMPUTED, BAKED, REFUSED, CHECKPOINT, NO_EFFECT = "computed", "baked", "refused", "checkpoint", "no effect"


@dataclass(frozen=True)
class TestOption:
    """One row of the policy: a dotted config key, what it does, and the mode of each column."""

    key: str
    what: str
    torch: str
    graph: str
    requires: str = ""  # a boolean option without which this one acts nowhere (then a non-default value is refused)
    same_as_default: tuple = ()  # values that act as the default does (deploy.precision=fp32 on the eager model)


POLICY: tuple[TestOption, ...] = (
    TestOption("test.score_thresh", "detections below this score are dropped", COMPUTED, BAKED),
    TestOption("test.nms_thresh", "per-class NMS IoU of the final detections", COMPUTED, BAKED),
    TestOption("test.detections_per_img", "detections kept per image", COMPUTED, BAKED),
    TestOption("model.rpn.pre_nms_topk_test", "proposals before the RPN's NMS", COMPUTED, BAKED),
    TestOption("model.rpn.post_nms_topk_test", "proposals after the RPN's NMS (the paper: 300)", COMPUTED, BAKED),
    TestOption("model.rpn.nms_thresh", "the RPN's NMS IoU", COMPUTED, BAKED),
    TestOption("model.rpn.min_box_size", "proposals smaller than this are dropped", COMPUTED, BAKED),
    TestOption("model.roi_head.context", "App. B global context (trained with the model)", CHECKPOINT, CHECKPOINT),
    TestOption("model.roi_head.chunk_size", "RoIs through conv5_x at once (memory only)", COMPUTED, NO_EFFECT),
    TestOption("test.precision", "eager autocast: fp32 | bf16 | fp16", COMPUTED, REFUSED),
    TestOption("test.box_refine", "App. B box refinement", COMPUTED, REFUSED),
    TestOption("test.box_vote", "voting after refinement", COMPUTED, REFUSED, requires="test.box_refine"),
    TestOption("test.box_vote_iou", "IoU of the voting boxes", COMPUTED, REFUSED, requires="test.box_refine"),
    TestOption("test.refine_nms_thresh", "NMS IoU after refinement", COMPUTED, REFUSED, requires="test.box_refine"),
    TestOption("test.multiscale", "App. B multi-scale testing (maxout over two levels)", COMPUTED, REFUSED),
    TestOption("test.multiscale_rpn", "proposals from every pyramid level", COMPUTED, REFUSED),
    TestOption("test.multiscale_rpn_scales", "all | adjacent levels for the RPN", COMPUTED, REFUSED,
               requires="test.multiscale_rpn"),
    TestOption("test.tile_size", "tiled inference (outside the model)", COMPUTED, COMPUTED),
    TestOption("test.tile_overlap", "tile overlap", COMPUTED, COMPUTED, requires="test.tile_size"),
    TestOption("test.tile_whole_image", "whole image besides the tiles", COMPUTED, COMPUTED,
               requires="test.tile_size"),
    TestOption("test.ims_per_batch", "images per eager batch (zero-padded to one size, which changes detections "
               "near the padding; a runtime runs one image at a time)", COMPUTED, REFUSED),
    TestOption("data.input.test_scale", "shorter side at test (resize outside the model)", COMPUTED, COMPUTED),
    TestOption("data.input.max_size", "longer side cap at test", COMPUTED, COMPUTED),
    TestOption("deploy.precision", "auto | fp32 | int8 | bf16: what a runtime runs (auto: the folder's int8 model "
               "when it kept the accuracy bound, else fp32; bf16: OpenVINO only)", REFUSED, COMPUTED,
               same_as_default=("fp32",)),
    TestOption("deploy.threads", "intra-op threads", COMPUTED, COMPUTED),
    TestOption("deploy.opset", "ONNX opset of the export", NO_EFFECT, BAKED),
    TestOption("deploy.calib_images", "training images that calibrate an int8 export", NO_EFFECT, COMPUTED),
    TestOption("deploy.int8_quantizer", "auto | nncf | onnxruntime: the tool of an int8 export", NO_EFFECT, COMPUTED),
    TestOption("deploy.int8_search", "try the int8 recipes until one keeps the accuracy bound", NO_EFFECT, COMPUTED),
    TestOption("deploy.int8_measure_images", "test-split images that measure each int8 attempt", NO_EFFECT,
               COMPUTED),
    TestOption("deploy.static_shapes", "OpenVINO: compiled models kept per input size (speed only)", NO_EFFECT,
               COMPUTED),
    TestOption("deploy.ov_hint", "OpenVINO: latency | throughput (speed only)", NO_EFFECT, COMPUTED),
    TestOption("deploy.ov_streams", "OpenVINO: CPU streams with the throughput hint (speed only)", NO_EFFECT,
               COMPUTED),
)

# model.* keys that only training reads: a checkpoint's value and the user's may differ (logged, not refused)
TRAINING_ONLY_MODEL_KEYS = (
    "model.weights", "model.class_name_map", "model.backbone.weights", "model.backbone.freeze_at",
    "model.rpn.fg_iou_thresh", "model.rpn.bg_iou_thresh", "model.rpn.batch_size_per_image",
    "model.rpn.positive_fraction", "model.rpn.ignore_cross_boundary", "model.rpn.pre_nms_topk_train",
    "model.rpn.post_nms_topk_train", "model.rpn.smooth_l1_beta", "model.roi_head.batch_size_per_image",
    "model.roi_head.positive_fraction", "model.roi_head.fg_iou_thresh", "model.roi_head.bg_iou_thresh_hi",
    "model.roi_head.bg_iou_thresh_lo", "model.roi_head.smooth_l1_beta",
)


def option(key: str) -> TestOption:
    """The policy row of `key` (KeyError for a key the policy does not list)."""
    return next(row for row in POLICY if row.key == key)


def value(cfg: Config, key: str) -> Any:
    """The value of a dotted key in a config."""
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def set_value(cfg: Config, key: str, new: Any) -> None:
    """Set a dotted key of a config in place."""
    *parents, leaf = key.split(".")
    node: Any = cfg
    for part in parents:
        node = getattr(node, part)
    setattr(node, leaf, new)


def _active(cfg: Config, key: str) -> bool:
    """An option is active when it differs from its default and its row's `same_as_default` values (`requires`
    parents: when they are on)."""
    current = value(cfg, key)
    row = next((row for row in POLICY if row.key == key), None)
    return current != value(_DEFAULTS, key) and current not in (row.same_as_default if row else ())


def column(backend: str) -> str:
    """The policy column of a test.backend value: `torch` for the eager model, `graph` for every runtime."""
    return "torch" if backend == "torch" else "graph"


def check_options(cfg: Config, *, backend: str, num_models: int = 1) -> None:
    """ConfigError for the first option that `backend` refuses, or that acts nowhere without its `requires`."""
    for row in POLICY:
        if not _active(cfg, row.key):
            continue
        if row.requires and not _active(cfg, row.requires):
            raise ConfigError(f"{row.key}={value(cfg, row.key)!r} acts only with {row.requires} set "
                              f"(now {value(cfg, row.requires)!r}); set {row.requires} or drop {row.key}")
        if getattr(row, column(backend)) == REFUSED:
            raise ConfigError(_refusal(row, value(cfg, row.key), backend))
    if num_models > 1 and backend != "torch":
        raise ConfigError(f"{num_models} checkpoints (an App. B ensemble) run only with test.backend=torch: an "
                          f"exported graph is one model; give one checkpoint or set test.backend=torch")


def _refusal(row: TestOption, current: Any, backend: str) -> str:
    if backend == "torch":
        return (f"{row.key}={current!r} is for exported runtimes ({row.what}); with test.backend=torch use "
                "test.precision=bf16 for reduced precision, or set test.backend=openvino")
    by = "an exported graph" if backend == "export" else f"test.backend={backend}"
    return (f"{row.key}={current!r} ({row.what}) is not computed by {by}: the exported graph "
            f"is one model at one scale in float32 without refinement; set {row.key} back to "
            f"{value(_DEFAULTS, row.key)!r}, or run it with test.backend=torch")


def baked_values(cfg: Config) -> dict[str, Any]:
    """{key: value} of every option the graph bakes in: what an export folder records."""
    return {row.key: value(cfg, row.key) for row in POLICY if row.graph == BAKED and _relevant(cfg, row)}


def _relevant(cfg: Config, row: TestOption) -> bool:
    return not row.requires or _active(cfg, row.requires)


def check_baked(cfg: Config, recorded: dict[str, Any], *, folder: str) -> None:
    """ConfigError naming the first baked option whose value in `cfg` differs from the export folder's."""
    for key, baked in recorded.items():
        ours = value(cfg, key)
        if not _same(ours, baked):
            raise ConfigError(f"{key}={ours!r} differs from the value {baked!r} baked into {folder} at export; "
                              f"export again with {key}={ours} (detres export ... {key}={ours}), drop the "
                              f"override, or run the checkpoint with test.backend=torch")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
    return a == b


def merge_model_keys(user: Config, stored: Config, *, where: str) -> None:
    """Bring the user's test-time model.* keys into the checkpoint's config `stored` (in place).

    Architecture keys come from the checkpoint: a differing one is refused, naming both values. Training-only keys
    are logged when they differ. `model.num_classes: 0` (take it from the data) matches any checkpoint.
    """
    test_time = {row.key for row in POLICY if row.key.startswith("model.") and row.torch == COMPUTED}
    ours = flatten_dict(config_to_dict(user)["model"], "model.")
    theirs = flatten_dict(config_to_dict(stored)["model"], "model.")
    ignored = []
    for key, mine in ours.items():
        if key in test_time:
            set_value(stored, key, mine)
        elif _same(mine, theirs.get(key)) or (key == "model.num_classes" and mine == 0):
            continue
        elif key in TRAINING_ONLY_MODEL_KEYS:
            ignored.append(f"{key}={mine!r}")
        else:
            raise ConfigError(f"{key}={mine!r} differs from the checkpoint's {theirs.get(key)!r} ({where}): the "
                              "network's architecture comes from the checkpoint; drop the override or the --cfg "
                              "that sets it (the checkpoint's own config is used when --cfg is not given)")
    if ignored:
        log.info("training-only keys left as the checkpoint has them at test time: %s", ", ".join(ignored))


def policy_markdown() -> str:
    """The table as docs/deploy.md shows it (a test keeps the two the same)."""
    lines = ["| option | what it does | torch (eager) | onnxruntime, openvino (the graph) |",
             "| --- | --- | --- | --- |"]
    for row in POLICY:
        what = row.what.replace("|", "\\|") + (f" (with `{row.requires}`)" if row.requires else "")
        lines.append(f"| `{row.key}` | {what} | {row.torch} | {row.graph} |")
    return "\n".join(lines)


_DEFAULTS = default_config()
