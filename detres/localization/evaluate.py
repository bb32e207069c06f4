"""Testing the localization system on a CLS-LOC split, the rows of the paper's Table 13:
whole-image box (baseline), RPN 1-crop, RPN dense, RPN+R-CNN dense; each judged on the ground-truth class
(LOC error on GT CLS) and, when a classification checkpoint gives the classes, top-1/top-5 LOC error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from detres.cli.progress import progress as progress_bar
from detres.config import Config, config_from_dict
from detres.data.image_io import read_image_rgb
from detres.data.records import ClassMap
from detres.distributed import resolve_device
from detres.errors import CheckpointError, ConfigError
from detres.evaluation.localization import localization_errors
from detres.io.checkpoint import load_checkpoint
from detres.localization.build import build_loc_rcnn, build_per_class_rpn, rcnn_checkpoint_path, rpn_checkpoint_path
from detres.localization.data import center_crop_window, normalize, read_loc_split, resize_shorter
from detres.localization.dense_testing import rpn_center_crop, rpn_dense
from detres.localization.rcnn import rcnn_rescore
from detres.modeling.resnet import build_resnet

ROWS = {  # key: (LOC testing method, testing)
    "whole_image": ("whole image", "-"),
    "rpn_1crop": ("RPN", "1-crop"),
    "rpn_dense": ("RPN", "dense"),
    "rpn_rcnn_dense": ("RPN+RCNN", "dense"),
}


@dataclass
class LocRow:
    key: str
    gt_class_boxes: dict[int, np.ndarray] = field(default_factory=dict)
    guesses: dict[int, list[tuple[int, np.ndarray]]] = field(default_factory=dict)
    seconds: float = 0.0


class Classifier:
    """A classification checkpoint (engineer A's train_cls output) that ranks the classes of an image by
    center-crop testing; its class indices are mapped to the localization set's labels through the wnids."""

    def __init__(self, path: str, class_map: ClassMap, device: torch.device) -> None:
        state = load_checkpoint(path)
        if "model" not in state or "config" not in state:
            raise CheckpointError(f"{path} is not a detres classification checkpoint (needs 'model' and 'config')")
        self.cfg = config_from_dict(state["config"])
        self.model = build_resnet(self.cfg.model.backbone, self.cfg.model.num_classes)
        self.model.load_state_dict(state["model"])
        self.model.to(device).eval()
        self.device = device
        # class order: the checkpoint's class map, or its class (folder = wnid) names, else the set's own order
        ids = (state.get("class_map") or {}).get("dataset_ids") or state.get("class_names") or class_map.dataset_ids
        index = {wnid: i + 1 for i, wnid in enumerate(class_map.dataset_ids)}
        self.to_label = [index.get(wnid, 0) for wnid in ids]  # 0: a class the localization set does not have
        if not any(self.to_label):
            raise CheckpointError(f"{path}: none of its classes is in the localization set's class list")

    @torch.no_grad()
    def top_labels(self, rgb: np.ndarray, k: int = 5) -> list[int]:
        inp = self.cfg.data.input
        resized, _ = resize_shorter(rgb, max(inp.test_resize, inp.crop_size))
        x0, y0 = center_crop_window(*resized.shape[:2], inp.crop_size)
        crop = resized[y0:y0 + inp.crop_size, x0:x0 + inp.crop_size]
        image = normalize(crop, self.cfg.model.backbone.pixel_mean, self.cfg.model.backbone.pixel_std)
        order = self.model(image[None].to(self.device))[0].argsort(descending=True).tolist()
        return [self.to_label[i] for i in order if self.to_label[i]][:k]


def evaluate_localization(cfg: Config, *, rows: list[str], cls_ckpt: str = "", max_images: int = 0,
                          progress: bool = True) -> tuple[dict[str, float], dict[str, LocRow]]:
    """Run the requested Table 13 rows over cfg.data.test; returns (flat metrics in percent, rows).

    Metric keys: loc/<row>/gt_cls_err (and loc/<row>/top1_err, top5_err with a classifier); the plain
    loc/gt_cls_err, loc/top1_err, loc/top5_err repeat the last requested row.
    """
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ConfigError(f"unknown localization test row {unknown[0]!r}; choose among {', '.join(ROWS)}")
    device = resolve_device(cfg.device)
    records, class_map = read_loc_split(cfg.data.test.root, cfg.data.test.split or "val")
    records = [r for r in records if len(r.boxes)]
    if max_images > 0:
        records = records[:max_images]
    if cfg.model.num_classes != len(class_map.names):
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but {cfg.data.test.root} lists "
                          f"{len(class_map.names)} classes")
    needs_rpn = any(r != "whole_image" for r in rows)
    predictor = build_per_class_rpn(cfg) if needs_rpn else None
    if predictor is not None:
        predictor.model.load_state_dict(load_checkpoint(rpn_checkpoint_path(cfg))["model"])
        predictor.model.to(device).eval()
    rcnn = coder = None
    if "rpn_rcnn_dense" in rows:
        rcnn, coder = build_loc_rcnn(cfg)
        rcnn.load_state_dict(load_checkpoint(rcnn_checkpoint_path(cfg))["model"])
        rcnn.to(device).eval()
    classifier = Classifier(cls_ckpt, class_map, device) if cls_ckpt else None
    mean, std = cfg.model.backbone.pixel_mean, cfg.model.backbone.pixel_std
    out = {key: LocRow(key) for key in rows}
    ground_truth = {}
    for rec in progress_bar(records, desc="loc test", enabled=progress):
        rgb = read_image_rgb(rec.image_path, max_pixels=cfg.data.input.max_pixels)
        ground_truth[rec.image_id] = (rec.boxes, np.full(len(rec.boxes), rec.label))
        ranked = classifier.top_labels(rgb) if classifier else []
        labels = list(dict.fromkeys([rec.label, *ranked]))
        for key in rows:
            tic = time.perf_counter()
            best = _best_boxes(key, rgb, labels, cfg, predictor, rcnn, coder, mean, std, device)
            out[key].seconds += time.perf_counter() - tic
            out[key].gt_class_boxes[rec.image_id] = best[rec.label]
            if classifier:
                out[key].guesses[rec.image_id] = [(c, best[c]) for c in ranked]
    metrics: dict[str, float] = {}
    for key in rows:
        row = localization_errors(out[key].guesses, ground_truth, out[key].gt_class_boxes)
        metrics.update({f"loc/{key}/{name.split('/')[-1]}": v for name, v in row.items()})
        metrics.update(row)  # the last row wins the plain keys
        metrics[f"loc/{key}/sec_per_image"] = out[key].seconds / len(records)
    return metrics, out


def _best_boxes(key: str, rgb: np.ndarray, labels: list[int], cfg: Config, predictor, rcnn, coder, mean, std,
                device) -> dict[int, np.ndarray]:
    """{label: the row's single best box [4] XYXY original pixels} for each label."""
    h, w = rgb.shape[:2]
    if key == "whole_image":
        return {c: np.array([0, 0, w, h], np.float32) for c in labels}
    common = dict(pixel_mean=mean, pixel_std=std, pre_nms_topk=cfg.loc.pre_nms_topk, nms_thresh=cfg.loc.nms_thresh)
    if key == "rpn_1crop":
        found = rpn_center_crop(predictor, rgb, labels, resize=cfg.data.input.test_resize,
                                crop=cfg.data.input.crop_size, topk=1, **common)
    else:
        found = rpn_dense(predictor, rgb, labels, scales=list(cfg.loc.test_scales), max_size=cfg.data.input.max_size,
                          topk=cfg.loc.proposals_per_class if key == "rpn_rcnn_dense" else 1, **common)
    if key == "rpn_rcnn_dense":
        image = normalize(rgb, mean, std).to(device)
        for c in labels:
            boxes, scores = rcnn_rescore(rcnn, image, found[c][0], c, size=cfg.loc.rcnn_input_size, coder=coder)
            found[c] = (boxes[scores.argsort(descending=True)], scores.sort(descending=True).values)
    result = {}
    for c in labels:
        boxes = found[c][0]
        # no box at all (an empty image crop): fall back to the whole image rather than guessing nothing
        result[c] = boxes[0].cpu().numpy() if len(boxes) else np.array([0, 0, w, h], np.float32)
    return result


def format_table13(metrics: dict[str, float], rows: list[str], *, loc_network: str, cls_network: str) -> str:
    """The layout of the paper's Table 13: method, LOC network, testing, LOC error on GT CLS, classification
    network, top-5 LOC error on predicted CLS (and top-1, seconds per image)."""
    head = (f"{'LOC testing':<12} {'LOC network':<14} {'testing':<8} {'LOC err on GT CLS':>17}   "
            f"{'classification network':<24} {'top-5 LOC err':>13} {'top-1 LOC err':>13} {'s/img':>7}")
    lines = [head, "-" * len(head)]
    for key in rows:
        method, testing = ROWS[key]
        net = "-" if key == "whole_image" else loc_network
        top5 = metrics.get(f"loc/{key}/top5_err")
        top1 = metrics.get(f"loc/{key}/top1_err")
        lines.append(f"{method:<12} {net:<14} {testing:<8} {metrics[f'loc/{key}/gt_cls_err']:>17.1f}   "
                     f"{cls_network if top5 is not None else '':<24} "
                     f"{'' if top5 is None else f'{top5:.1f}':>13} {'' if top1 is None else f'{top1:.1f}':>13} "
                     f"{metrics[f'loc/{key}/sec_per_image']:>7.3f}")
    return "\n".join(lines)
