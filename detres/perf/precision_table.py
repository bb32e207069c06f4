"""Issue 25's precision table for one trained checkpoint: the accuracy of every reduced-precision path on the
model's val split, and its speed against the peer (torchvision's FasterRCNN with the same weights) in one run.

- accuracy: mAP@.5 and mAP@[.5,.95] (COCO metrics through detres.evaluation, as `detres test` computes them) of
  eager fp32 and bf16 autocast, OpenVINO fp32, int8 (NNCF) and bf16, and ONNX Runtime int8 (quantize_static);
- batch 1: img/s of each path and of the peer (eager, ONNX Runtime, OpenVINO f32, OpenVINO at its default
  precision) on one synthetic image of the benchmark size, timed alternately (detres.perf.measure);
- folder: img/s over a list of same-size images in one call, OpenVINO with the latency hint and the dynamic model,
  with the static-shape cache, and with the throughput hint (all requests at once);
- profile: where the time goes in OpenVINO (its layer counters by layer type) for detres int8 and fp32 and the peer.
Ratios are against the peer's fastest fp32 path and against the peer in OpenVINO at its default precision.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path

import torch

from detres.config import Config
from detres.data.detection import build_split
from detres.deploy.artifact import read_export_info
from detres.deploy.export import export_detector
from detres.deploy.inputs import as_graph_input
from detres.deploy.int8_data import int8_data
from detres.deploy.loader import open_exported
from detres.deploy.quantize import QUANTIZERS
from detres.deploy.runtime_onnx import OnnxRuntimeDetector
from detres.deploy.runtime_openvino import OpenVinoDetector, bf16_supported
from detres.engine.inference import run_inference
from detres.engine.loading import load_detector
from detres.engine.predictor import build_predictor
from detres.engine.trainer import eval_loader
from detres.evaluation.evaluate import evaluate_detections
from detres.modeling.fast_inference import autocast_dtype
from detres.perf.backends import export_peer, peer_runner
from detres.perf.measure import alternating_medians
from detres.perf.openvino_profile import format_profile, openvino_profile
from detres.perf.peer import build_peer
from detres.perf.synthetic import synthetic_batch

log = logging.getLogger("detres.perf")
CPU = torch.device("cpu")
# (row, test.backend, deploy.precision, test.precision, export folder): the accuracy rows
PATHS = [("eager fp32", "torch", "fp32", "fp32", None), ("eager bf16", "torch", "fp32", "bf16", None),
         ("openvino fp32", "openvino", "fp32", "fp32", "nncf"), ("openvino int8 (nncf)", "openvino", "int8", "fp32",
                                                                   "nncf"),
         ("onnxruntime int8 (quantize_static)", "onnxruntime", "int8", "fp32", "onnxruntime"),
         ("openvino bf16", "openvino", "bf16", "fp32", "nncf")]


def precision_table(ckpt: str, cfg: Config, *, calib: int, height: int, width: int, folder_images: int, runs: int,
                    warmup: int) -> dict:
    """{"accuracy": {row: {"map50", "map"}}, "batch1": {row: img/s}, "folder": {row: img/s}, "ratios": {...},
    "settings": {...}}. cfg: the run's config (the checkpoint's own, overrides on top)."""
    model, class_map, stored = load_detector(ckpt, cfg)
    backbone = stored.model.backbone
    data = int8_data(stored, calib, stored.deploy.int8_measure_images)
    calibration = data.calibration
    bf16 = bf16_supported(__import__("openvino").Core())
    peer = build_peer(model, stored).eval()  # first: a model the peer cannot mirror fails before the long part
    with tempfile.TemporaryDirectory(prefix="detres_precision_") as tmp:
        folders = {}
        for quantizer in QUANTIZERS:
            variant = copy.deepcopy(stored)
            variant.deploy.int8_quantizer = quantizer
            log.info("exporting with the %s int8 model (%d calibration images) ...", quantizer, len(calibration))
            folders[quantizer] = export_detector(model, variant, class_map, Path(tmp) / quantizer, fmt="onnx",
                                                 calibration=calibration, measure=data.measure)
        accuracy = _accuracy(ckpt, cfg, folders, bf16)
        images, _ = synthetic_batch(max(folder_images, 1), height=height, width=width,
                                    num_classes=stored.model.num_classes, pixel_mean=backbone.pixel_mean,
                                    pixel_std=backbone.pixel_std, seed=0)
        peer_path = Path(tmp) / "peer.onnx"
        export_peer(peer, images[0], peer_path)
        batch1 = _batch1(ckpt, cfg, folders, peer, peer_path, images[:1], bf16, runs=runs, warmup=warmup)
        folder = _folder(folders["nncf"], images[:folder_images], bf16, cfg.deploy.threads, runs=runs, warmup=warmup)
        profile = _profiles(folders["nncf"], peer_path, images[0], cfg.deploy.threads)
        recipes = {quantizer: _recipes(folder) for quantizer, folder in folders.items()}
    return {"accuracy": accuracy, "batch1": batch1, "folder": folder, "ratios": _ratios(batch1, folder),
            "profile": profile, "int8_recipes": recipes,
            "settings": {"checkpoint": ckpt, "val": stored.data.test.ann_file or stored.data.test.root,
                         "calibration_images": len(calibration), "size": [height, width],
                         "folder_images": folder_images, "runs": runs, "warmup": warmup, "bf16_cpu": bf16,
                         "threads": torch.get_num_threads()}}


def _variant(cfg: Config, backend: str, precision: str, test_precision: str) -> Config:
    out = copy.deepcopy(cfg)
    out.test.backend, out.deploy.precision, out.test.precision = backend, precision, test_precision
    return out


def _accuracy(ckpt: str, cfg: Config, folders: dict[str, Path], bf16: bool) -> dict[str, dict[str, float]]:
    """mAP@.5 and mAP@[.5,.95] of every path on the val split (cfg.data.test), as `detres test` computes them."""
    out = {}
    for row, backend, precision, test_precision, folder in PATHS:
        if precision == "bf16" and not bf16:
            out[row] = {"skipped": "this CPU has no bf16"}
            continue
        run_cfg = _variant(cfg, backend, precision, test_precision)
        source = {"ckpts": [ckpt]} if folder is None else {"model_dir": folders[folder]}
        detector = build_predictor(run_cfg, device=CPU, **source)
        dataset = build_split(run_cfg.data, "test", pixel_mean=run_cfg.model.backbone.pixel_mean,
                              pixel_std=run_cfg.model.backbone.pixel_std, train=False, seed=run_cfg.seed)
        detections = run_inference(detector, eval_loader(run_cfg, dataset), device=CPU, progress=False,
                                   autocast_dtype=autocast_dtype(test_precision, CPU))
        metrics = evaluate_detections(dataset, detections, ["coco"], run_cfg.data.test.ann_file or None)
        out[row] = {"map50": round(metrics["coco/AP50"], 2), "map": round(metrics["coco/AP"], 2)}
        log.info("%s: mAP@.5 %.2f, mAP@[.5,.95] %.2f", row, out[row]["map50"], out[row]["map"])
    return out


def _batch1(ckpt, cfg, folders, peer, peer_path, images, bf16, *, runs: int, warmup: int) -> dict[str, float]:
    """img/s at batch 1 of every detres path and of the peer, timed alternately in this process."""
    threads = cfg.deploy.threads
    eager = build_predictor(_variant(cfg, "torch", "fp32", "fp32"), ckpts=[ckpt], device=CPU)
    ov = {p: open_exported(folders["nncf"], backend="openvino", precision=p, threads=threads)[0]
          for p in ("fp32", "int8", *(("bf16",) if bf16 else ()))}
    ort_int8 = open_exported(folders["onnxruntime"], backend="onnxruntime", precision="int8", threads=threads)[0]
    ort_fp32 = open_exported(folders["onnxruntime"], backend="onnxruntime", threads=threads)[0]
    peer_ov = peer_runner(OpenVinoDetector(path=peer_path, threads=threads))
    # OpenVINO picks bf16 by itself where the CPU has it: what a user who sets no hint gets
    peer_ov_default = peer_runner(OpenVinoDetector(path=peer_path, threads=threads, bf16=bf16))
    peer_ort = peer_runner(OnnxRuntimeDetector(path=peer_path, threads=threads))

    def under(dtype):
        def run(call):
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                return call(images)
        return run

    calls = {"detres eager fp32": lambda: under(None)(eager), "detres eager bf16": lambda: under(torch.bfloat16)(eager),
             "detres onnxruntime fp32": lambda: ort_fp32(images), "detres onnxruntime int8": lambda: ort_int8(images),
             "peer eager fp32": lambda: under(None)(lambda x: peer(x)),
             "peer onnxruntime fp32": lambda: peer_ort(images), "peer openvino fp32": lambda: peer_ov(images),
             "peer openvino default": lambda: peer_ov_default(images)}
    for precision, detector in ov.items():
        calls[f"detres openvino {precision}"] = lambda d=detector: d(images)
    medians = alternating_medians(calls, device=CPU, warmup=warmup, runs=runs)
    return {name: round(1.0 / seconds, 3) for name, seconds in medians.items()}


def _folder(folder: Path, images, bf16: bool, threads: int, *, runs: int, warmup: int) -> dict[str, float]:
    """img/s over `images` (one size) in one call: OpenVINO dynamic, static-shape cache, throughput hint."""
    from detres.config import DeployConfig

    calls = {}
    for precision in ("fp32", "int8", *(("bf16",) if bf16 else ())):
        modes = {"dynamic": DeployConfig(static_shapes=0), "static": DeployConfig(),
                 "static + throughput": DeployConfig(ov_hint="throughput")}
        for mode, deploy in modes.items():
            deploy.precision, deploy.threads = precision, threads
            detector = open_exported(folder, backend="openvino", deploy=deploy)[0]
            calls[f"openvino {precision} {mode}"] = lambda d=detector: d(images)
    medians = alternating_medians(calls, device=CPU, warmup=warmup, runs=runs)
    return {name: round(len(images) / seconds, 3) for name, seconds in medians.items()}


def _profiles(folder: Path, peer_path: Path, image, threads: int) -> dict[str, dict]:
    """Where the time goes (OpenVINO's layer counters, at the benchmark size, static shape): detres int8 (NNCF) and
    fp32, and the peer in f32, each compiled as the speed rows run them."""
    settings = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads > 0 else {})}
    feed = as_graph_input(image)
    info = read_export_info(folder)
    paths = {"detres openvino int8": info.int8_artifact, "detres openvino fp32": info.artifact,
             "peer openvino fp32": peer_path}
    return {name: openvino_profile(path, feed, config=settings) for name, path in paths.items()}


def _recipes(folder: Path) -> dict:
    """What `detres export --int8` tried for a folder (detres.deploy.int8_search): each recipe's mAP on the
    images it measured on (the test split's, else the calibration images), and the one installed."""
    record = read_export_info(folder).int8
    return {"installed": record["recipe"],
            "images": record["accuracy"]["images"],
            "attempts": [{"recipe": a["recipe"], "seconds": a["seconds"], "kept_bound": a["kept_bound"],
                          "fp32": a["accuracy"]["fp32"], "int8": a["accuracy"]["int8"]}
                         for a in record["attempts"] if a["accuracy"]]}


def _ratios(batch1: dict[str, float], folder: dict[str, float]) -> dict[str, float]:
    fastest = max(v for k, v in batch1.items() if k.startswith("peer") and k.endswith("fp32"))
    default = batch1["peer openvino default"]
    rows = {**{f"batch1 {k}": v for k, v in batch1.items() if k.startswith("detres")},
            **{f"folder {k}": v for k, v in folder.items()}}
    out = {"peer fastest fp32 img/s": fastest, "peer openvino default img/s": default}
    for name, value in rows.items():
        out[f"{name} vs peer fastest fp32"] = round(value / fastest, 2)
        out[f"{name} vs peer openvino default"] = round(value / default, 2)
    return out


def format_precision_table(result: dict) -> str:
    """Markdown: the accuracy rows, then the speed rows with both ratios."""
    lines = ["| path | mAP@.5 | mAP@[.5,.95] |", "| --- | ---: | ---: |"]
    for row, acc in result["accuracy"].items():
        lines.append(f"| {row} | {acc.get('map50', '-')} | {acc.get('map', acc.get('skipped', '-'))} |")
    for recipes in result.get("int8_recipes", {}).values():
        lines += ["", f"| int8 recipe (at export, on {recipes['images']}) | "
                  "fp32 mAP@.5 / mAP | int8 mAP@.5 / mAP | kept | s |", "| --- | --- | --- | --- | ---: |"]
        for a in recipes["attempts"]:
            installed = " (installed)" if a["recipe"] == recipes["installed"] else ""
            lines.append(f"| {a['recipe']}{installed} | {a['fp32']['map50']:.2f} / {a['fp32']['map']:.2f} | "
                         f"{a['int8']['map50']:.2f} / {a['int8']['map']:.2f} | {a['kept_bound']} | {a['seconds']} |")
    ratios = result["ratios"]
    lines += ["", "| speed | img/s | vs peer fastest fp32 | vs peer OpenVINO default |", "| --- | ---: | ---: | ---: |"]
    for kind in ("batch1", "folder"):
        for row, value in result[kind].items():
            key = f"{kind} {row}"
            versus = (f"{ratios[key + ' vs peer fastest fp32']:.2f}x | {ratios[key + ' vs peer openvino default']:.2f}x"
                      if key + " vs peer fastest fp32" in ratios else "- | -")
            lines.append(f"| {key} | {value:.3f} | {versus} |")
    for name, profile in result.get("profile", {}).items():
        lines += ["", format_profile(name, profile)]
    return "\n".join(lines)
