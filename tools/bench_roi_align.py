"""Time the C4 head's RoI pooling alone, as detres runs it: eager (detres's op), and the exported op (the ONNX
RoiAlign / MaxRoiPool that tools/export.py writes) in ONNX Runtime and OpenVINO. Each runtime's output is checked
against eager first. It is the op the precision table's profile names as the cap on int8 speed (docs/deploy.md).

    python tools/bench_roi_align.py                                   # R-50 C4 at 600x800: 1024 ch, stride 16
    python tools/bench_roi_align.py --rois 300 --sampling 2 --size 800x1333
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from detres.cli import run_main, tool_parser
from detres.deploy.export import MIN_OPSET
from detres.deploy.onnx_ops import CUSTOM_TRANSLATIONS
from detres.modeling.roi_pooling import POOLERS, RoIPooling
from detres.perf.measure import alternating_medians

CPU = torch.device("cpu")


class _Pooling(nn.Module):
    """The traceable pooling of one image's boxes, as detres.deploy.graph puts it in the exported graph."""

    def __init__(self, pooling: RoIPooling) -> None:
        super().__init__()
        self.pooling = pooling.traceable()

    def forward(self, features: Tensor, boxes: Tensor) -> Tensor:
        return self.pooling(features, [boxes])


def _boxes(count: int, height: int, width: int) -> Tensor:
    """`count` boxes inside the image, sides from 16 px to half the image (seeded): proposals' sizes."""
    generator = torch.Generator().manual_seed(0)
    sides = 16 + torch.rand(count, 2, generator=generator) * torch.tensor([width / 2 - 16, height / 2 - 16])
    corner = torch.rand(count, 2, generator=generator) * (torch.tensor([width, height]) - sides)
    return torch.cat([corner, corner + sides], dim=1)


def _runtimes(onnx_path: Path, features: Tensor, boxes: Tensor, threads: int) -> dict:
    """name -> call returning the pooled array, for ONNX Runtime and OpenVINO (f32, and bf16 where the CPU has it)."""
    import onnxruntime as ort
    import openvino as ov

    from detres.deploy.runtime_openvino import bf16_supported

    feeds = {"features": features.numpy(), "boxes": boxes.numpy()}
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    calls = {"onnxruntime": lambda: session.run(None, feeds)[0]}
    core = ov.Core()
    for precision in ("f32", *(("bf16",) if bf16_supported(core) else ())):
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(str(onnx_path), "CPU", config)
        request = compiled.create_infer_request()
        calls[f"openvino {precision}"] = lambda r=request, c=compiled: r.infer(feeds)[c.output(0)]
    return calls


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--pooler", default="roi_align", choices=POOLERS, help="model.roi_head.pooler (default "
                        "roi_align, aligned=True)")
    parser.add_argument("--size", default="600x800", metavar="HxW", help="image size the boxes live in (default "
                        "600x800, tools/bench.py's)")
    parser.add_argument("--channels", type=int, default=1024, help="feature channels (default 1024: conv4_x of "
                        "R-50/R-101)")
    parser.add_argument("--stride", type=int, default=16, help="feature stride in pixels (default 16: conv4_x)")
    parser.add_argument("--rois", type=int, default=100, help="boxes pooled per call (default 100: the test "
                        "proposals of configs/shapes_r50_scratch.yaml)")
    parser.add_argument("--resolution", type=int, default=14, help="output bins per side (default 14: C4)")
    parser.add_argument("--sampling", type=int, default=0, help="model.roi_head.sampling_ratio (default 0: "
                        "adaptive, ceil(box side / bins) points per bin and axis)")
    parser.add_argument("--threads", type=int, default=0, help="threads of every runtime (default 0: each one's "
                        "default, all cores)")
    parser.add_argument("--runs", type=int, default=7, help="timed rounds, median reported (default 7)")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    pooling = RoIPooling(args.pooler, args.resolution, 1 / args.stride, args.sampling)
    features = torch.rand(1, args.channels, -(-height // args.stride), -(-width // args.stride),
                          generator=torch.Generator().manual_seed(1))
    boxes = _boxes(args.rois, height, width)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        onnx_path = Path(tmp) / "pooling.onnx"
        torch.onnx.export(_Pooling(pooling).eval(), (features, boxes), str(onnx_path),
                          input_names=["features", "boxes"], opset_version=max(MIN_OPSET, 18), dynamo=True,
                          verbose=False, custom_translation_table=CUSTOM_TRANSLATIONS)  # as detres exports it
        reference = pooling(features, [boxes]).numpy()
        calls = {"eager (detres)": lambda: pooling(features, [boxes]).numpy(),
                 **_runtimes(onnx_path, features, boxes, args.threads)}
        errors = {name: float(np.abs(np.asarray(call(), np.float32) - reference).max()) for name, call in calls.items()}
        seconds = alternating_medians(calls, device=CPU, warmup=1, runs=args.runs)
    print(f"{args.pooler}: {args.rois} boxes on [{args.channels}, {features.shape[2]}, {features.shape[3]}] "
          f"-> {args.resolution}x{args.resolution}, sampling_ratio {args.sampling}, {torch.get_num_threads()} threads")
    print("| runtime | ms per call | max abs difference from eager |\n| --- | ---: | ---: |")
    for name, value in seconds.items():
        print(f"| {name} | {1000 * value:.1f} | {errors[name]:.1e} |")
    return 0


if __name__ == "__main__":
    run_main(main)
