"""Benchmark detres against torchvision's FasterRCNN assembled as a C4 peer from the same weights.

    python tools/bench.py --cfg configs/coco_r101.yaml [--ckpt FILE] [--precision fp32|bf16] [--out FILE.json]
                          [--quick] [--sweep] [--ablation] [--backends torch,onnxruntime,openvino,int8]
                          [KEY=VALUE ...]
"""

from __future__ import annotations

import json

from detres.cli import add_overrides, run_main, tool_parser
from detres.io.atomic import write_atomic
from detres.perf.backends import parse_backends
from detres.perf.bench import BenchOptions, run_benchmark
from detres.perf.report import format_table


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--cfg", required=True, metavar="YAML",
                        help="detection config YAML, e.g. configs/coco_r101.yaml")
    parser.add_argument("--ckpt", default="", metavar="PTH",
                        help="trained detection checkpoint, e.g. runs/demo/model_final.pth (default: calibrated "
                             "random weights)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="detres's inference precision (the peer always runs fp32)")
    parser.add_argument("--device", default="cpu", help="where both sides run: cpu | cuda | cuda:N | auto")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="torch threads per side (default: 0, torch's default)")
    parser.add_argument("--batch", type=int, default=2, metavar="N", help="the N of the batch-N inference figure")
    parser.add_argument("--train-batch", type=int, default=1, metavar="N", help="images per training iteration")
    parser.add_argument("--runs", type=int, default=5, metavar="N", help="timed runs per figure (median reported)")
    parser.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed runs before timing")
    parser.add_argument("--quick", action="store_true", help="2 timed runs, a smaller matmul: for development")
    parser.add_argument("--sweep", action="store_true",
                        help="also time proposals 100/300/1000 and shorter side 400/600/800")
    parser.add_argument("--ablation", action="store_true", help="also time each inference optimization alone")
    parser.add_argument("--backends", default="", metavar="LIST",
                        help="also time these runtimes at batch 1, comma list of torch, onnxruntime, openvino, int8 "
                             "(detres exported, the peer exported at a fixed size); default: none, e.g. "
                             "--backends torch,onnxruntime,openvino,int8")
    parser.add_argument("--out", default="", metavar="JSON",
                        help="write the flat JSON here, e.g. bench.json (default: print the table only)")
    add_overrides(parser)
    args = parser.parse_args()
    opts = BenchOptions(cfg=args.cfg, overrides=args.overrides, ckpt=args.ckpt, precision=args.precision,
                        device=args.device, threads=args.threads, batch=args.batch, train_batch=args.train_batch,
                        warmup=args.warmup, runs=args.runs, quick=args.quick, sweep=args.sweep,
                        ablation=args.ablation, backends=parse_backends(args.backends))
    results = run_benchmark(opts)
    print(format_table(results, batch=args.batch))
    if args.out:
        write_atomic(args.out, json.dumps(results, indent=1, sort_keys=True), fix="check --out")
    return 0


if __name__ == "__main__":
    run_main(main)
