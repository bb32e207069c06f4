"""Detection over a folder of images at scale: decoding in loader workers, torchrun shards, a resumable journal.

The sorted file list is the unit of work. Images are read and resized in DataLoader workers while the model runs
on the previous ones; each finished image (its detections, or why it could not be read) is appended to this
rank's journal (detres.engine.infer_journal) after its drawing is written. Under torchrun the images not yet in
any journal are split across ranks; at the end rank 0 merges every journal into one `detections.json`, written
atomically, in the sorted file order, so the result does not depend on the number of ranks or workers or on
how often the run was stopped and resumed.

The model is any callable `predictor([image_tensor]) -> [{"boxes", "scores", "labels"}]` taking normalized CHW
float32 tensors (an eager detector, or an exported model's runtime).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from detres import distributed as dist
from detres.cli.progress import progress
from detres.config import Config, config_to_dict
from detres.data.image_io import read_image_rgb
from detres.data.loader import CheckedLoader
from detres.data.records import ClassMap
from detres.data.transforms import prepare_image, to_original
from detres.engine.infer_journal import (
    JournalWriter,
    check_header,
    journal_files,
    journal_path,
    make_header,
    read_journal,
)
from detres.engine.memory import MemoryTrace
from detres.engine.tiled_inference import detect_image
from detres.errors import DataError, UserError
from detres.io.folders import EXTENSIONS, find_images, output_names, write_file_atomic
from detres.modeling.fast_inference import autocast_dtype
from detres.vis import draw_detections

log = logging.getLogger("detres.infer")
Predictor = Callable[[list[torch.Tensor]], list[dict[str, torch.Tensor]]]
REPORT_NAME = "detections.json"


class FolderImages(Dataset):
    """Image i of a list, read and prepared for the model: {"index", "tensor" [3, H', W'], "orig_size", "rgb"
    (uint8 [H, W, 3], only when drawing)}, or {"index", "error"} for a file that cannot be read, so that an
    unreadable image is a failure of that image, never of the worker."""

    def __init__(self, paths: list[Path], *, cfg: Config, keep_rgb: bool) -> None:
        self.paths, self.keep_rgb, self.cfg = paths, keep_rgb, cfg
        self.max_pixels = cfg.data.input.max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        try:
            rgb = read_image_rgb(self.paths[index], max_pixels=self.max_pixels)
        except DataError as exc:
            return {"index": index, "error": str(exc)}
        tensor = model_input(rgb, self.cfg)
        item = {"index": index, "tensor": tensor, "orig_size": rgb.shape[:2]}
        if self.keep_rgb:
            item["rgb"] = torch.from_numpy(rgb)  # a tensor crosses from a worker in shared memory, not pickled
        return item


def _single(batch: list[dict]) -> dict:
    return batch[0]


def build_folder_loader(dataset: FolderImages, *, workers: int, timeout: float) -> CheckedLoader:
    """Images in order, `workers` processes reading ahead (0: read in this process)."""
    if workers > 0:
        cv2.setNumThreads(1)  # before the workers fork (see detres.data.loader: set inside a worker it can deadlock)
    return CheckedLoader(dataset, batch_size=1, shuffle=False, num_workers=workers, collate_fn=_single,
                         timeout=timeout, persistent_workers=False)


def model_input(rgb: np.ndarray, cfg: Config) -> torch.Tensor:
    """The model's input [3, H', W'] for an RGB image [H, W, 3], as every detres inference tool makes it: the
    shorter side resized to data.input.test_scale (the longer capped at max_size), normalized with the backbone's
    pixel mean and std."""
    tensor, _ = prepare_image(rgb, short=cfg.data.input.test_scale, max_size=cfg.data.input.max_size,
                              pixel_mean=cfg.model.backbone.pixel_mean, pixel_std=cfg.model.backbone.pixel_std)
    return tensor


def detect(predictor: Predictor, tensor: torch.Tensor, orig_size: tuple[int, int], *, device: torch.device,
           precision: str, score_thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes [K, 4] XYXY in the original image's pixels, scores [K], labels [K]) of detections >= `score_thr`."""
    return detect_batch(predictor, [tensor], [orig_size], device=device, precision=precision,
                        score_thrs=[score_thr])[0]


def detect_batch(predictor: Predictor, tensors: list[torch.Tensor], orig_sizes: list[tuple[int, int]], *,
                 device: torch.device, precision: str,
                 score_thrs: list[float]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`detect` for several images in one call of the predictor (the eager model pads them into one batch):
    per image, (boxes [K, 4] original pixels, scores [K], labels [K]) of its detections >= its score threshold."""
    dtype = autocast_dtype(precision, device)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        dets = predictor([tensor.to(device) for tensor in tensors])
    found = []
    for det, tensor, orig_size, score_thr in zip(dets, tensors, orig_sizes, score_thrs):
        keep = det["scores"] >= score_thr
        # back to the image's pixels by each axis's own resize ratio (sizes are rounded), as detres test maps them
        scale = (tensor.shape[1] / orig_size[0], tensor.shape[2] / orig_size[1])
        mapped = to_original({k: v[keep] for k, v in det.items()}, {"scale": scale, "orig_size": orig_size})
        found.append((mapped["boxes"], mapped["scores"], mapped["labels"]))
    return found


def detect_tiled(predictor: Predictor, rgb: np.ndarray, cfg: Config, *, device: torch.device,
                 score_thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`detect` for test.tile_size > 0: tiles of the original image at the training scale, merged."""
    det = detect_image(predictor, rgb, cfg, device)
    keep = det["scores"] >= score_thr
    return det["boxes"][keep].numpy(), det["scores"][keep].numpy(), det["labels"][keep].numpy()


def _float32(value) -> float:
    """The shortest decimal that reads back as the same float32: full precision in few digits, so a results file
    converted from detections.json (--format coco) gives the metrics of detres test; rounded scores would tie."""
    return float(str(np.float32(value)))


def detections_as_json(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_map: ClassMap) -> list[dict]:
    return [{"box": [_float32(v) for v in box], "score": _float32(score),
             "label": class_map.name_of(int(label))} for box, score, label in zip(boxes, scores, labels)]


def run_config(cfg: Config) -> dict:
    """The parts of the config that change detections, which a resumed run must share with the run it continues:
    `model` (architecture and the test-time `model.rpn.*_test` keys), `test` (thresholds, App. B options, tiles,
    backend, precision), `data.input` (test scale, max size) and `deploy` (precision, opset, calibration count: what
    an export made on the fly computes). Not in it, because detections do not change with them: reader workers,
    timeouts, `deploy.threads`, the output folder, the seed (inference draws nothing) and the device (the same
    computation; like the world size, a resume may move to other hardware)."""
    full = config_to_dict(cfg)
    deploy = {k: v for k, v in full["deploy"].items() if k != "threads"}
    return {"model": full["model"], "test": full["test"], "data.input": full["data"]["input"], "deploy": deploy}


def _earlier_run(output_dir: Path, header: dict, resume: bool) -> tuple[list[Path], bool]:
    """(the journals of earlier runs, whether the report of a finished run holds results) that `resume` continues.

    Without `resume` an output folder holding a journal is refused: mixing two runs' results silently is worse
    than asking. Journals, when there are any, hold every finished image (an older report is not this run's)."""
    journals = journal_files(output_dir)
    if journals and not resume:
        raise UserError(f"--output {output_dir} holds the journal of an unfinished run ({journals[0].name}); "
                        "pass --resume to continue it, or choose another --output")
    if not resume or journals:
        return journals, False
    previous = _previous_report(output_dir)
    if previous is None:
        return [], False
    check_header(previous["run"], header, output_dir / REPORT_NAME)
    return [], True


def _previous_report(output_dir: Path) -> dict | None:
    """The report of a finished run in `output_dir` (its "run" header is what --resume checks), if there is one."""
    try:
        previous = json.loads((output_dir / REPORT_NAME).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return previous if isinstance(previous, dict) and isinstance(previous.get("run"), dict) else None


def _records(output_dir: Path, header: dict, journals: list[Path], use_report: bool) -> Iterator[dict]:
    """Every finished-image record of the earlier runs: the finished report's (`use_report`), then the journals'."""
    if use_report:
        previous = _previous_report(output_dir) or {}
        for image, dets in previous.get("detections", {}).items():
            yield {"image": image, "detections": dets}
        for image, reason in previous.get("failed_reasons", {}).items():
            yield {"image": image, "failed": reason}
    for path in journals:
        yield from read_journal(path, header)


def _merge(done: dict[str, dict], keys: list[str], names: dict[str, str], draw: bool) -> dict:
    """The report's results, in the sorted file order; each image once."""
    detections, failed, reasons = {}, [], {}
    for key in keys:
        record = done.get(key)
        if record is None:
            raise UserError(f"internal: {key} was never processed; run again with --resume")
        if "failed" in record:
            failed.append(key)
            reasons[key] = record["failed"]
        else:
            detections[key] = record["detections"]
    outputs = {key: names[key] for key in keys if key in detections} if draw else {}
    return {"detections": detections, "failed": failed, "failed_reasons": reasons, "outputs": outputs}


def infer_folder(predictor: Predictor, class_map: ClassMap, cfg: Config, device: torch.device, input_dir: Path,
                 output_dir: Path, score_thr: float, *, workers: int = 0, resume: bool = False, draw: bool = True,
                 model_sha256: str = "") -> dict | None:
    """Detect (and draw) every image under `input_dir`; write `output_dir/detections.json`; return its report on
    rank 0 (None on the other ranks of a torchrun job).

    Unreadable images are logged and listed under "failed". Resident memory is recorded after the first tenth
    of this rank's images (allocator and caches warmed up) and at the end, so a leak shows as
    "memory.growth_percent". `resume`: skip the images that the journals in `output_dir` hold as finished.
    """
    images = find_images(input_dir)
    if not images:
        raise UserError(f"no images ({', '.join(sorted(EXTENSIONS))}) under {input_dir}")
    relatives = [path.relative_to(input_dir) for path in images]
    keys = [str(rel) for rel in relatives]
    names = {str(rel): name for rel, name in output_names(relatives).items()}
    header = make_header(input_dir=input_dir, relatives=relatives, config=run_config(cfg),
                         model_sha256=model_sha256, score_thr=score_thr, draw=draw)
    output_dir.mkdir(parents=True, exist_ok=True)
    journals, use_report = _earlier_run(output_dir, header, resume)
    done = {record["image"] for record in _records(output_dir, header, journals, use_report)}  # names only
    dist.barrier()  # every rank has read the same journals before any rank appends to its own
    rank, world = dist.rank(), dist.world_size()
    todo = [i for i, key in enumerate(keys) if key not in done][rank::world]
    if dist.is_main_process() and done:
        log.info("resuming: %d of %d images already done", len(done), len(keys))
    tic = time.perf_counter()
    trace = MemoryTrace(baseline_step=max(1, len(todo) // 10))
    dataset = FolderImages([images[i] for i in todo], cfg=cfg, keep_rgb=draw or cfg.test.tile_size > 0)
    loader = build_folder_loader(dataset, workers=workers, timeout=cfg.data.loader_timeout)
    detected, count = 0, 0
    per_call = images_per_call(predictor)
    with JournalWriter(journal_path(output_dir, rank), header) as journal:
        bar = progress(loader, total=len(todo), desc="infer", enabled=dist.is_main_process())
        for group in _groups(bar, per_call):
            found = _detect_group([item for item in group if "error" not in item], predictor, cfg, device,
                                  score_thr)
            for item in group:
                key = keys[todo[item["index"]]]
                if "error" in item:
                    log.warning("skipped: %s", item["error"])
                    journal.append({"image": key, "failed": item["error"]})
                else:
                    boxes, scores, labels = found[item["index"]]
                    if draw:
                        _write_drawing(output_dir / names[key], item["rgb"].numpy(), boxes, scores, labels,
                                       class_map, images[todo[item["index"]]])
                    journal.append({"image": key,
                                    "detections": detections_as_json(boxes, scores, labels, class_map)})
                    detected += 1
                count += 1
                trace.record(count)
    stats = _gather({"detected": detected, "memory": trace.report()})
    if not dist.is_main_process():
        dist.barrier()  # rank 0 merges
        return None
    records: dict[str, dict] = {}
    for record in _records(output_dir, header, journal_files(output_dir), use_report):
        records.setdefault(record["image"], record)  # the same image twice (never expected): the first counts
    elapsed = time.perf_counter() - tic
    detected_total = sum(s["detected"] for s in stats)
    report = {**_merge(records, keys, names, draw), "images_per_second": detected_total / max(elapsed, 1e-9),
              "seconds": round(elapsed, 3), "memory": stats[0]["memory"], "ranks": world,
              "resumed_images": len(done), "run": header}
    if world > 1:
        report["memory_per_rank"] = [s["memory"] for s in stats]
    write_file_atomic(output_dir / REPORT_NAME, json.dumps(report, indent=1).encode())
    for path in journal_files(output_dir):  # the report now holds every record (and the header, for --resume)
        path.unlink(missing_ok=True)
    dist.barrier()
    return report


def images_per_call(predictor: Predictor) -> int:
    """How many images the folder loop hands the predictor in one call: what the predictor asks for
    (`.images_per_call`: OpenVINO's parallel infer requests under deploy.ov_hint=throughput), else 1. More than one
    never changes a detection: a runtime runs each image at its own size, and the eager model is asked for one."""
    return max(1, int(getattr(predictor, "images_per_call", 1)))


def _groups(items, size: int) -> Iterator[list[dict]]:
    """Consecutive items in lists of `size` (the last may be shorter)."""
    group: list[dict] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _detect_group(items: list[dict], predictor: Predictor, cfg: Config, device: torch.device,
                  score_thr: float) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Detections of readable images, by their loader index: whole images in one predictor call, or, with tiles
    (test.tile_size > 0), each image through detect_tiled."""
    if cfg.test.tile_size > 0:  # large images: the model runs on tiles of the original (detect_image)
        return {item["index"]: detect_tiled(predictor, item["rgb"].numpy(), cfg, device=device, score_thr=score_thr)
                for item in items}
    if not items:
        return {}
    found = detect_batch(predictor, [item["tensor"] for item in items],
                         [tuple(item["orig_size"]) for item in items], device=device,
                         precision=cfg.test.precision, score_thrs=[score_thr] * len(items))
    return {item["index"]: result for item, result in zip(items, found)}


def _write_drawing(path: Path, rgb: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                   class_map: ClassMap, source: Path) -> None:
    drawn = draw_detections(rgb, boxes, scores, labels, class_map.names)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"OpenCV could not encode the drawing of {source} as JPEG")
    write_file_atomic(path, jpeg.tobytes())


def _gather(value: dict) -> list[dict]:
    """`value` of every rank, in rank order (one process: [value])."""
    if dist.world_size() == 1:
        return [value]
    values: list[dict | None] = [None] * dist.world_size()
    torch.distributed.all_gather_object(values, value)
    return values  # type: ignore[return-value]
