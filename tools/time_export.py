"""Time the export of a detector and the first detection of the exported model in each runtime (fresh process).

    python tools/time_export.py --cfg configs/coco_r101.yaml              # random calibrated weights, 600x800
    python tools/time_export.py --ckpt runs/demo/model_final.pth --height 320 --width 427
"""

from __future__ import annotations

import tempfile
import time

import torch

from detres.cli import add_overrides, run_main, tool_parser
from detres.cli.ckpt_config import add_cfg_from_ckpt, config_for_checkpoint
from detres.data.records import ClassMap
from detres.deploy.export import export_detector
from detres.deploy.loader import RUNTIMES, open_exported
from detres.engine.loading import load_detector
from detres.modeling.faster_rcnn import build_faster_rcnn
from detres.perf.bench import calibrate_benchmark_model


def main() -> int:
    parser = tool_parser(__doc__)
    add_cfg_from_ckpt(parser)
    parser.add_argument("--ckpt", default="", metavar="PTH",
                        help="detection checkpoint, e.g. runs/demo/model_final.pth (default: none, random weights "
                             "calibrated as tools/bench.py calibrates them)")
    parser.add_argument("--height", type=int, default=600, metavar="PX", help="height of the timed image, e.g. 800")
    parser.add_argument("--width", type=int, default=800, metavar="PX", help="width of the timed image, e.g. 1333")
    add_overrides(parser)
    args = parser.parse_args()
    cfg = config_for_checkpoint(args.cfg, args.ckpt or None, args.overrides)
    torch.manual_seed(0)
    image = torch.randn(3, args.height, args.width)
    if args.ckpt:
        model, class_map, _ = load_detector(args.ckpt, cfg)
    else:
        model = build_faster_rcnn(cfg).eval()
        calibrate_benchmark_model(model, [torch.randn(3, args.height, args.width) for _ in range(2)])
        ids = list(range(1, cfg.model.num_classes + 1))
        class_map = ClassMap(names=[f"class{i}" for i in ids], dataset_ids=ids)
    with tempfile.TemporaryDirectory(prefix="detres_time_export_") as out:
        tic = time.perf_counter()
        export_detector(model.eval(), cfg, class_map, out, fmt="onnx")
        print(f"export to ONNX: {time.perf_counter() - tic:.1f} s")
        for backend in RUNTIMES:
            tic = time.perf_counter()
            run, _ = open_exported(out, backend=backend)
            opened = time.perf_counter()
            run([image])
            done = time.perf_counter()
            print(f"{backend}: open {opened - tic:.1f} s + first {args.height}x{args.width} detection "
                  f"{done - opened:.1f} s = {done - tic:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
