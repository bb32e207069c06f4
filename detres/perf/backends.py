"""Benchmark rows per runtime: detres's exported graph in ONNX Runtime, OpenVINO and OpenVINO int8, and the peer
(torchvision's FasterRCNN) exported the way torchvision documents it (TorchScript exporter, one fixed image size,
`torch.onnx.export(model, ([image],), opset_version=...)`) in ONNX Runtime and OpenVINO.

`prepare_backends` exports in the parent process and checks agreement; `time_backends` runs in a child
(detres.perf.child, kind "backends") and times every runtime alternately at batch 1. Ratios are against the
peer's fastest float32 path of the same run (eager, ONNX Runtime or OpenVINO), as issue 15 asks.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor

from detres.config import Config
from detres.data.records import ClassMap
from detres.deploy.export import export_detector
from detres.deploy.loader import RUNTIMES, open_exported
from detres.deploy.runtime_onnx import OnnxRuntimeDetector
from detres.deploy.runtime_openvino import OpenVinoDetector
from detres.errors import UserError
from detres.perf.agreement import compare_detections
from detres.perf.peer import build_peer

BACKENDS = ("torch", *RUNTIMES, "int8")  # int8: OpenVINO's int8 model (NNCF)
PEER_OPSET = 16  # torchvision's exporter registers roi_align for opset >= 16 with aligned=True


def parse_backends(text: str) -> list[str]:
    """'torch,onnxruntime' -> ['torch', 'onnxruntime']; UserError for an unknown name."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise UserError(f"--backends {text!r}: unknown {', '.join(unknown)}; expected a comma list of "
                        f"{', '.join(BACKENDS)}")
    return names


def prepare_backends(model: torch.nn.Module, cfg: Config, images: list[Tensor], calibration: list[Tensor],
                     backends: list[str], tmp: str) -> tuple[dict[str, str], dict[str, float]]:
    """Export detres (dynamic sizes) and the peer (fixed at the images' size) into `tmp`; check each runtime's
    detections against eager detres. Returns (paths for the child, agreement figures)."""
    runtimes = [b for b in backends if b != "torch"]
    if not runtimes:
        return {}, {}
    names = ClassMap(names=[f"class{i}" for i in range(1, cfg.model.num_classes + 1)],
                     dataset_ids=list(range(1, cfg.model.num_classes + 1)))
    folder = export_detector(model, cfg, names, Path(tmp) / "export", fmt="onnx",
                             calibration=calibration if "int8" in runtimes else None)
    peer_path = Path(tmp) / "peer.onnx"
    export_peer(build_peer(model, cfg).eval(), images[0], peer_path)
    paths = {"export": str(folder), "peer": str(peer_path)}
    with torch.inference_mode():
        reference = [model([image])[0] for image in images]
    agreement = {}
    for name, run in runners(paths, runtimes).items():
        versus = compare_detections(run(images), reference, iou_thresh=0.99)
        agreement[f"agree/{name}/max_score_diff"] = versus["max_score_diff"]
        agreement[f"agree/{name}/matched_frac"] = versus["matched_frac"]
    return paths, agreement


def export_peer(peer: torch.nn.Module, image: Tensor, path: Path) -> None:
    """torchvision's documented ONNX export of its detector: the TorchScript exporter at one image size."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python values in the graph
        torch.onnx.export(peer, ([image],), str(path), opset_version=PEER_OPSET, dynamo=False,
                          input_names=["image"], output_names=["boxes", "labels", "scores"])


def runners(paths: dict[str, str], runtimes: list[str], threads: int = 0) -> dict[str, object]:
    """name -> callable(images) for each runtime row: detres_<runtime> and, for fp32 runtimes, peer_<runtime>."""
    out: dict[str, object] = {}
    for runtime in runtimes:
        backend, precision = ("openvino", "int8") if runtime == "int8" else (runtime, "fp32")
        out[f"detres_{runtime}"] = open_exported(paths["export"], backend=backend, precision=precision,
                                                 threads=threads)[0]
        if runtime == "onnxruntime":
            out["peer_onnxruntime"] = peer_runner(OnnxRuntimeDetector(path=paths["peer"], threads=threads))
        elif runtime == "openvino":
            out["peer_openvino"] = peer_runner(OpenVinoDetector(path=paths["peer"], threads=threads))
    return out


def peer_runner(detector):
    """The peer graph's outputs are (boxes, labels, scores); the runtime classes read them as (boxes, scores,
    labels), so swap back, and feed the [3, H, W] input that torchvision's graph takes."""
    def run(images: list[Tensor]):
        outs = []
        for image in images:
            feed = image.detach().cpu().numpy()
            if isinstance(detector, OnnxRuntimeDetector):
                boxes, labels, scores = detector.session.run(None, {detector.session.get_inputs()[0].name: feed})
            else:
                result = detector.request.infer({0: feed})
                boxes, labels, scores = (result[detector.compiled.output(i)] for i in range(3))
            outs.append({"boxes": torch.from_numpy(boxes), "scores": torch.from_numpy(scores),
                         "labels": torch.from_numpy(labels.astype("int64"))})
        return outs
    return run


def time_backends(paths: dict[str, str], runtimes: list[str], images: list[Tensor], *, threads: int, warmup: int,
                  runs: int) -> dict[str, float]:
    """Batch-1 images/s of every runtime row, timed alternately: `backend/<row>/infer_img_s`."""
    from detres.perf.measure import alternating_medians

    calls = {name: (lambda r=run: r(images[:1])) for name, run in runners(paths, runtimes, threads).items()}
    medians = alternating_medians(calls, device=torch.device("cpu"), warmup=warmup, runs=runs)
    return {f"backend/{name}/infer_img_s": 1.0 / seconds for name, seconds in medians.items()}


def derive_backend_ratios(results: dict[str, float]) -> None:
    """`backend/detres_torch` and `backend/peer_torch` from the eager rows, then every row's ratio to the peer's
    fastest float32 path (`ratio/backend/<row>`), and which path that was (`backend/peer_fastest_fp32`)."""
    if "detres/infer_img_s" in results:
        results["backend/detres_torch/infer_img_s"] = results["detres/infer_img_s"]
        results["backend/peer_torch/infer_img_s"] = results["peer/infer_img_s"]
    peer_rows = {k: v for k, v in results.items() if k.startswith("backend/peer_") and k.endswith("/infer_img_s")}
    if not peer_rows:
        return
    fastest_key = max(peer_rows, key=peer_rows.get)
    fastest = peer_rows[fastest_key]
    results["backend/peer_fastest_fp32_img_s"] = fastest
    for key, value in list(results.items()):
        if key.startswith("backend/") and key.endswith("/infer_img_s"):
            results[f"ratio/{key[:-len('/infer_img_s')]}"] = value / fastest
    results["backend/peer_fastest_is_" + fastest_key.split("/")[1]] = 1.0


def format_backend_table(results: dict[str, float]) -> str:
    """Markdown rows per backend (batch 1), with the ratio to the peer's fastest float32 path; '' when none."""
    rows = sorted(k.split("/")[1] for k in results if k.startswith("backend/") and k.endswith("/infer_img_s"))
    if not rows:
        return ""
    fastest = next((k[len("backend/peer_fastest_is_"):] for k in results if k.startswith("backend/peer_fastest_is_")),
                   "-")
    lines = [f"| backend (batch 1) | img/s | vs the peer's fastest fp32 ({fastest}) | agreement with eager |",
             "| --- | ---: | ---: | --- |"]
    for row in rows:
        agree = results.get(f"agree/{row}/matched_frac")
        text = (f"matched {agree:.3f}, max score diff {results[f'agree/{row}/max_score_diff']:.1e}"
                if agree is not None else "-")
        ratio = results.get(f"ratio/backend/{row}")
        lines.append(f"| {row} | {results[f'backend/{row}/infer_img_s']:.3f} | "
                     f"{f'{ratio:.2f}x' if ratio is not None else '-'} | {text} |")
    return "\n".join(lines)
