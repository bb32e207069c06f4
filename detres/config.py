"""Typed configuration: a dataclass schema, YAML files with `_base_:` inheritance, KEY=VALUE overrides.

OmegaConf structured configs do the typing and merging; this module adds what OmegaConf does not:
`_base_` chains (relative paths, cycle detection) and error messages that name the file, the key and
the nearest valid key. `build_*` functions elsewhere are the only readers of a `Config`.
"""

from __future__ import annotations

import copy
import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf  # noqa: F401  (MISSING re-exported for schemas)
from omegaconf.errors import OmegaConfBaseException

from detres.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Schema. Every setting detres reads lives here, with the paper's value as its default where the
# paper gives one.
# ---------------------------------------------------------------------------------------------


@dataclass
class BackboneConfig:
    """The ResNet (Table 1 of the paper) and how it is initialized and frozen."""

    depth: int = 101  # 18, 34, 50, 101, 152; or 6n+2 with cifar=True
    width: int = 64  # base channels of conv1/conv2_x; tiny values make CPU test nets of the same shape
    shortcut: str = "B"  # A (zero-padded identity), B (projection when shape changes), C (always projection)
    plain: bool = False  # the same net without shortcuts
    stride_in_1x1: bool = False  # MSRA layout: the stride on the first 1x1 conv of a bottleneck
    cifar: bool = False  # the CIFAR 6n+2 nets of Sec. 4.2 (16/32/64 channels, option A)
    freeze_at: int = 2  # 0: nothing frozen; 1: stem; 2: stem + conv2_x (detection default)
    # normalization after every conv: frozen_bn (BN replaced by FrozenBatchNorm2d: the paper's detection, App. A) |
    # bn (BatchNorm2d, trained) | gn (GroupNorm, 32 groups: batch-independent, for training from scratch with small
    # batches, He, Girshick and Dollar 2019). Older configs' frozen_bn: true/false read as frozen_bn/bn.
    norm: str = "frozen_bn"
    weights: str = ""  # detres classification checkpoint or torchvision ResNet .pth; "" = from scratch
    pixel_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # RGB, on [0,1] pixels
    pixel_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class RPNConfig:
    """Region proposal network (Faster R-CNN) on the conv4_x map."""

    anchor_sizes: list[float] = field(default_factory=lambda: [128.0, 256.0, 512.0])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    head_channels: int = 0  # 3x3 conv channels; 0 = same as the conv4_x output
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    ignore_cross_boundary: bool = True  # anchors crossing the image border get no label in training
    pre_nms_topk_train: int = 12000
    pre_nms_topk_test: int = 6000
    post_nms_topk_train: int = 2000
    post_nms_topk_test: int = 300
    nms_thresh: float = 0.7
    min_box_size: float = 0.0
    smooth_l1_beta: float = 1.0 / 9.0


@dataclass
class RoIHeadConfig:
    """Fast R-CNN head: RoI pooling before conv5_1, conv5_x, average pooling, sibling layers."""

    pooler: str = "roi_pool"  # roi_pool (the paper) | roi_align
    pooler_resolution: int = 14
    sampling_ratio: int = 0  # roi_align only
    batch_size_per_image: int = 128
    positive_fraction: float = 0.25
    fg_iou_thresh: float = 0.5
    bg_iou_thresh_hi: float = 0.5
    bg_iou_thresh_lo: float = 0.0
    box_reg_weights: list[float] = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])
    smooth_l1_beta: float = 1.0
    context: bool = False  # App. B global context: whole-image RoI through conv5_x, concatenated
    chunk_size: int = 0  # RoIs through conv5_x at once at inference; 0 = all at once
    norm: str = ""  # conv5_x's normalization: frozen_bn | bn | gn; "" = model.backbone.norm


@dataclass
class ModelConfig:
    """The detector (or classifier) to build."""

    arch: str = "faster_rcnn_c4"  # faster_rcnn_c4 | resnet (classification)
    num_classes: int = 80  # foreground classes for detection; classes for classification; 0 = from the training set
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_head: RoIHeadConfig = field(default_factory=RoIHeadConfig)
    # fine-tuning: a detres *detection* checkpoint to start from (model.backbone.weights holds a classifier);
    # layers of matching shape load, predictor rows are copied by class name (detres.modeling.finetune)
    weights: str = ""
    class_name_map: str = ""  # YAML file {new class name: name in model.weights' classes}; "" = same names


@dataclass
class DatasetConfig:
    """One dataset split on disk. Which fields matter depends on `format`."""

    format: str = "coco"  # coco | voc | imagenet_det | imagenet_cls | cifar10 | imagenet_loc
    root: str = ""  # VOCdevkit / ILSVRC / ImageNet root, or COCO image folder
    ann_file: str = ""  # COCO json
    image_dir: str = ""  # COCO images (defaults to root)
    split: str = ""  # VOC-style ImageSets split or ImageNet folder (train / val)
    sets: list[str] = field(default_factory=list)  # VOC (year, split) pairs as "2007:trainval"
    use_difficult: bool = False  # VOC: train on difficult boxes too


@dataclass
class InputConfig:
    """Image sizes and augmentation."""

    train_scales: list[int] = field(default_factory=lambda: [600])  # shorter side, one chosen per image
    max_size: int = 1000  # longer side cap
    test_scale: int = 600
    flip: bool = True
    size_divisibility: int = 16  # batches are padded to a multiple of this
    max_pixels: int = 100_000_000  # refuse images above this many pixels (decompression bombs)
    # classification (Sec. 3.4)
    crop_size: int = 224
    resize_range: list[int] = field(default_factory=lambda: [256, 480])
    test_resize: int = 256
    pca_jitter: float = 0.1  # std of the AlexNet-style PCA colour noise; 0 disables
    cifar_pad: int = 4
    # multi-scale training (the paper's App. B left it undone): where the shorter side of a training image comes from
    train_scale_source: str = "train_scales"  # train_scales | test_pyramid (test.pyramid_scales, longer side capped
    #                                            at scale * max_size / test_scale, as the test pyramid's levels are)
    train_scale_sampling: str = "image"  # image: one random scale per image | iteration: one per mini-batch


@dataclass
class DataConfig:
    train: DatasetConfig = field(default_factory=DatasetConfig)
    test: DatasetConfig = field(default_factory=DatasetConfig)
    input: InputConfig = field(default_factory=InputConfig)
    num_workers: int = 2
    loader_timeout: float = 300.0  # seconds a loader worker may take for one batch before it counts as hung
    aspect_ratio_grouping: bool = True
    generate_demo: str = ""  # demo only: generate the synthetic set with this script if absent
    # training only, before the paper's resize and flip: albumentations transforms in albumentations' serialized
    # form, e.g. [{__class_fullname__: VerticalFlip, p: 0.5}] (detres.data.augment); [] = none
    augment: list[dict[str, Any]] = field(default_factory=list)
    # a box keeps at least this fraction of its area after data.augment or is dropped (YOLOv5's box_candidates
    # uses 0.1); boxes are always clipped to the image
    augment_min_visibility: float = 0.1
    # large images (docs/own_data.md, detres/data/crops.py): training images larger than train_crop pixels yield
    # train_crop x train_crop windows at native resolution, about area / train_crop^2 per image and epoch, before
    # data.augment and the paper's resize; boxes are clipped and kept by data.augment_min_visibility; 0 = off
    train_crop: int = 0
    train_crop_background: float = 0.2  # probability that a window with no object is kept (else it moves onto one)
    train_crop_cache_mb: int = 1024  # per loader process: decoded images kept for their next windows (not for TIFF)


@dataclass
class StepSolverConfig:
    """The schedule of one step of step-wise training (solver.mode=stepwise); the rest comes from solver.*."""

    max_iter: int = 320000  # App. A: 240k iterations at base_lr, 80k at base_lr/10
    base_lr: float = 0.001
    steps: list[int] = field(default_factory=lambda: [240000])
    ims_per_batch: int = 8  # global batch of this step (App. A: 8 for the RPN step, 16 for the Fast R-CNN step)
    warmup_iters: int = 500


@dataclass
class SolverConfig:
    """SGD with momentum; step (by iteration), plateau or CIFAR schedules."""

    base_lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 1e-4
    ims_per_batch: int = 8  # global batch; split across processes under torchrun
    max_iter: int = 320000
    max_epochs: int = 0  # classification: epochs; 0 = use max_iter
    schedule: str = "step"  # step | plateau | cifar
    steps: list[int] = field(default_factory=lambda: [240000])
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    plateau_patience: int = 3  # epochs without improvement of the val error before lr /= 10
    min_lr: float = 1e-6
    amp: bool = False  # autocast: float16 on CUDA, bfloat16 on CPU
    nan_policy: str = "stop"  # stop | skip: a non-finite loss stops training, or the step is skipped
    clip_grad_norm: float = 0.0
    channels_last: bool = True  # train with NHWC weights and activations (oneDNN/cuDNN's native layout; faster)
    # joint: RPN and Fast R-CNN trained together in one run (detres's default) | stepwise: Faster R-CNN's 4-step
    # alternating training (Ren et al. 2015, the paper's App. A): RPN; Fast R-CNN on its proposals; RPN on the fixed
    # shared layers; Fast R-CNN on the fixed shared layers (detres/engine/stepwise.py)
    mode: str = "joint"
    rpn_step: StepSolverConfig = field(default_factory=StepSolverConfig)  # steps 1 and 3
    rcnn_step: StepSolverConfig = field(default_factory=lambda: StepSolverConfig(ims_per_batch=16))  # steps 2, 4


@dataclass
class TestConfig:
    """Inference and evaluation settings, including the Appendix B options."""

    score_thresh: float = 0.05
    nms_thresh: float = 0.3
    detections_per_img: int = 100
    ims_per_batch: int = 1
    precision: str = "fp32"  # fp32 | bf16 (CPU or CUDA autocast) | fp16 (CUDA autocast)
    backend: str = "torch"  # torch (eager, checkpoints) | onnxruntime | openvino (export folders; docs/deploy.md)
    eval_metrics: list[str] = field(default_factory=list)  # default: by dataset format
    coco_backend: str = "pycocotools"  # pycocotools (the reference) | faster_coco_eval (C++ COCOeval, same stats)
    # App. B
    box_refine: bool = False
    box_vote: bool = True  # with box_refine: score-weighted voting after NMS
    box_vote_iou: float = 0.5
    refine_nms_thresh: float = 0.3
    multiscale: bool = False
    pyramid_scales: list[int] = field(default_factory=lambda: [200, 400, 600, 800, 1000])
    # multi-scale RPN testing (App. B did it "only for the Fast R-CNN step"): proposals from the pyramid's levels,
    # mapped to the image, merged by NMS (model.rpn.nms_thresh), cut to model.rpn.post_nms_topk_test
    multiscale_rpn: bool = False
    multiscale_rpn_scales: str = "all"  # all pyramid levels | adjacent: the two levels around the test scale
    # tiled inference for large images (detres/engine/tiled_inference.py, docs/own_data.md)
    tile_size: int = 0  # tile side in original-image pixels; 0 = off (the whole image at test_scale)
    tile_overlap: float = 0.25  # fraction of tile_size that neighbouring tiles share; objects up to this fit in one
    tile_whole_image: bool = False  # with tiles: also detect the whole image at test_scale (large objects)
    # classification testing
    cls_mode: str = "center"  # center | tencrop | fullyconv
    cls_scales: list[int] = field(default_factory=lambda: [224, 256, 384, 480, 640])


@dataclass
class LocConfig:
    """ImageNet localization (App. C): per-class RPN and RoI-centric R-CNN."""

    feature_stage: int = 4  # which ResNet stage feeds the per-class RPN (4: conv4_x, 5: conv5_x)
    anchors_per_image: int = 8
    positive_fraction: float = 0.5
    proposals_per_class: int = 200
    rcnn_batch_size: int = 256
    rcnn_input_size: int = 224
    test_scales: list[int] = field(default_factory=lambda: [224, 256, 384, 480, 640])
    rpn_ckpt: str = ""  # R-CNN stage / testing: the per-class RPN; "" = <output.dir>/rpn/model_final.pth
    cls_ckpt: str = ""  # testing: classification checkpoint that predicts the classes; "" = ground-truth classes
    rcnn_ckpt: str = ""  # testing: the R-CNN; "" = <output.dir>/rcnn/model_final.pth when it exists
    nms_thresh: float = 0.7  # per-class NMS among the RPN's boxes before keeping proposals_per_class
    pre_nms_topk: int = 6000  # per class and scale, before NMS
    rcnn_max_iter: int = 0  # R-CNN stage iterations; 0 = solver.max_iter
    rcnn_steps: list[int] = field(default_factory=list)  # R-CNN lr steps; empty = solver.steps
    rcnn_fg_fraction: float = 0.25  # foreground share of an R-CNN mini-batch
    rcnn_fg_iou: float = 0.5  # proposal IoU with a gt box at or above which it is the object
    rcnn_bg_iou_lo: float = 0.1  # below this a proposal is too easy to be a background example


@dataclass
class DeployConfig:
    """Exported detectors (docs/deploy.md): how tools/export.py writes them and which one the runtimes load."""

    opset: int = 18  # ONNX opset; >= 16 keeps RoIAlign's half-pixel alignment (aligned=True)
    # auto | fp32 | int8 | bf16: what a runtime runs. auto: the folder's int8 model when it has one that the runtime
    # reads and whose recorded accuracy kept the bound, else fp32 (docs/deploy.md); bf16: OpenVINO only
    precision: str = "auto"
    calib_images: int = 64  # training images that calibrate the int8 quantization (tools/export.py --calib)
    int8_quantizer: str = "auto"  # auto | nncf | onnxruntime: the tool that writes the int8 model (docs/deploy.md)
    # with annotated images to measure on, try the quantizer's recipes in order until one keeps the
    # accuracy bound (detres.deploy.int8_recipes); false: only its first recipe
    int8_search: bool = True
    # images of the test split (data.test) on which each int8 attempt is measured; 0, or a test split without
    # boxes: the calibration images themselves (detres.deploy.int8_data)
    int8_measure_images: int = 100
    threads: int = 0  # runtime intra-op threads; 0 = the runtime's default (all cores)
    static_shapes: int = 8  # OpenVINO: compiled models kept per input size (from a size's 2nd image); 0 = off
    ov_hint: str = "latency"  # OpenVINO PERFORMANCE_HINT: latency | throughput (images of one call run at once)
    ov_streams: int = 0  # OpenVINO NUM_STREAMS with ov_hint=throughput; 0 = OpenVINO's choice


@dataclass
class ServeConfig:
    """`detres serve` (docs/serving.md): the detector behind HTTP, with a bounded queue and dynamic batching."""

    host: str = "127.0.0.1"  # address to listen on; 0.0.0.0 exposes the server to the network
    port: int = 8080
    max_batch: int = 8  # images detected together in one forward
    max_wait_ms: float = 10.0  # how long the first image of a batch waits for more to arrive
    max_queue: int = 64  # images waiting for the model; past it requests get 503 with Retry-After
    pad_batch: bool = False  # true: pad images of different sizes into one batch (faster, not infer's detections)
    max_body_mb: float = 20.0  # request bodies above this get 413
    decode_threads: int = 2  # threads that decode and resize images, off the model's thread
    score_thr: float = 0.5  # a request's score threshold when its query gives none (infer's --score-thr default)
    token_file: str = ""  # file holding the bearer tokens (one a line); "" = no authentication
    model_name: str = "detres"  # the model's name in the /v2 routes
    retry_after_s: int = 1  # the Retry-After header of a 503
    shutdown_timeout_s: float = 30.0  # on SIGTERM, how long in-flight requests may take before the exit


@dataclass
class OutputConfig:
    dir: str = "runs/default"
    checkpoint_period: int = 5000
    eval_period: int = 0  # 0: evaluate only at the end
    log_period: int = 20
    tensorboard: bool = True
    vis_images: int = 4  # validation images with boxes drawn into TensorBoard


@dataclass
class Config:
    """The whole run: model, data, solver, test, localization and output settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    test: TestConfig = field(default_factory=TestConfig)
    loc: LocConfig = field(default_factory=LocConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

BASE_KEY = "_base_"


def default_config() -> Config:
    """A fresh `Config` with every default."""
    return OmegaConf.to_object(OmegaConf.structured(Config))  # type: ignore[return-value]


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML file (following `_base_` chains), apply KEY=VALUE overrides, return a typed `Config`.

    Raises ConfigError naming the file and key for a missing file, a `_base_` cycle, bad YAML,
    an unknown key (with the nearest valid one) or a value of the wrong type.
    """
    merged = OmegaConf.structured(Config)
    if path is not None:
        for layer_path, layer in _yaml_chain(Path(path), ()):
            layer = _renamed(layer, where=str(layer_path))
            _check_keys(layer, Config, where=str(layer_path))
            merged = _merge(merged, layer, where=str(layer_path))
    merged = _apply_overrides(merged, overrides)
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config is incomplete: {exc}") from None


def _apply_overrides(merged: DictConfig, overrides: list[str] | None) -> DictConfig:
    for item in overrides or []:
        key, value = _parse_override(item)
        layer = _renamed(_nest(key, value), where=f"override {item!r}")
        _check_keys(layer, Config, where=f"override {item!r}")
        merged = _merge(merged, layer, where=f"override {item!r}")
    return merged


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically), so a run can be reproduced from its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(config_to_yaml(cfg))
    os.replace(tmp, path)


def config_to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of the config (what checkpoints store)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]


def flatten_dict(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"deploy": {"precision": "fp32"}} -> {"deploy.precision": "fp32"}: dotted keys, as overrides write them."""
    out: dict[str, Any] = {}
    for key, item in tree.items():
        if isinstance(item, dict):
            out.update(flatten_dict(item, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = item
    return out


# Keys that older detres versions wrote into checkpoints and that no longer exist (they had no effect).
RETIRED_KEYS = ("model.rpn.loss_weight",)
# Keys that older detres versions wrote (into checkpoints and config files) under another name: old dotted key ->
# (new key in the same section, old value -> new value). Read everywhere a config comes from, so old runs load.
RENAMED_KEYS = {"model.backbone.frozen_bn": ("norm", {True: "frozen_bn", False: "bn"})}


def config_from_dict(data: dict[str, Any]) -> Config:
    """Inverse of `config_to_dict`, with the same key and type checks as a YAML file; a checkpoint written by an
    older version loads, its retired keys left out."""
    data = _without_retired(data)
    _check_keys(data, Config, where="stored config")
    return OmegaConf.to_object(_merge(OmegaConf.structured(Config), data, where="stored config"))


def config_from_stored(data: dict[str, Any], overrides: list[str] | None = None, *,
                       where: str = "stored config") -> Config:
    """A stored config (the resolved config a checkpoint holds) with KEY=VALUE overrides on top, checked as
    `load_config` checks a YAML file; `where` names the source in errors (e.g. the checkpoint's path)."""
    data = _without_retired(data)
    _check_keys(data, Config, where=where)
    merged = _apply_overrides(_merge(OmegaConf.structured(Config), data, where=where), overrides)
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{where} is incomplete: {exc}") from None


def _without_retired(data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for dotted in RETIRED_KEYS:
        *parents, leaf = dotted.split(".")
        node = _section(data, parents)
        if isinstance(node, dict):
            node.pop(leaf, None)
    return _renamed(data, where="stored config")


def _section(data: dict[str, Any], parents: list[str]) -> Any:
    node: Any = data
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _renamed(data: dict[str, Any], *, where: str) -> dict[str, Any]:
    """`data` (a copy) with the old keys of RENAMED_KEYS written as their new keys and values; ConfigError for an
    old value with no new meaning, or an old key that contradicts its new key given beside it."""
    data = copy.deepcopy(data)
    for dotted, (new, values) in RENAMED_KEYS.items():
        *parents, leaf = dotted.split(".")
        node = _section(data, parents)
        if not isinstance(node, dict) or leaf not in node:
            continue
        old = node.pop(leaf)
        old = {"true": True, "false": False}.get(old.lower(), old) if isinstance(old, str) else old
        target = ".".join([*parents, new])
        if not isinstance(old, bool) or old not in values:
            raise ConfigError(f"{where}: '{dotted}' = {old!r} is an old key; write {target}: "
                              f"{' | '.join(dict.fromkeys(values.values()))} instead")
        if new in node and node[new] != values[old]:
            raise ConfigError(f"{where}: '{dotted}: {old}' (old key, means {target}: {values[old]}) contradicts "
                              f"'{target}: {node[new]}'; keep only {target}")
        node[new] = values[old]
    return data


def _yaml_chain(path: Path, seen: tuple[Path, ...]) -> list[tuple[Path, dict]]:
    """The YAML layers from the deepest `_base_` to `path`, each as (file, dict without `_base_`)."""
    path = path.expanduser()
    if not path.is_file():
        hint = f" (named as _base_ in {seen[-1]})" if seen else ""
        raise ConfigError(f"config file not found: {path}{hint}")
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise ConfigError(f"_base_ cycle in config files: {chain}; remove one of the _base_ links")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); is it a config?") \
            from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, got {type(data).__name__}")
    bases = data.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of file names")
    layers: list[tuple[Path, dict]] = []
    for base in bases:
        layers += _yaml_chain(path.parent / base, (*seen, resolved))
    layers.append((path, data))
    return layers


def _check_keys(data: dict, schema: type, where: str, prefix: str = "") -> None:
    """Raise ConfigError for the first key of `data` that `schema` does not have, with a suggestion."""
    names = {f.name: f for f in fields(schema)}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            valid = [f"{prefix}{n}" for n in names]
            near = difflib.get_close_matches(dotted, valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{near[0]}'?" if near else f"; valid keys here: {', '.join(valid)}"
            raise ConfigError(f"{where}: unknown config key '{dotted}'{hint}")
        sub = _dataclass_type(names[key])
        if sub is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{dotted}' is a section; give it keys, not {value!r}")
            _check_keys(value, sub, where, prefix=f"{dotted}.")


def _dataclass_type(f: Any) -> type | None:
    default = f.default_factory() if callable(f.default_factory) else None
    return type(default) if is_dataclass(default) else None


def _merge(base: DictConfig, layer: dict, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or "?"
        msg = getattr(exc, "msg", str(exc)).splitlines()[0]
        raise ConfigError(f"{where}: bad value for '{key}': {msg}") from None


def _parse_override(item: str) -> tuple[str, Any]:
    """`a.b=VALUE` -> ("a.b", value parsed as YAML, so 0.01 is a float and [1,2] a list)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not KEY=VALUE (for example solver.base_lr=0.01)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not valid YAML: take it as a plain string
    return key.strip(), value


def _nest(dotted: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out
