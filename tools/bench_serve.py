"""Throughput and p50/p95/p99 latency of `detres serve` at several client concurrencies, against `detres infer`
over the same images as the offline ceiling (the table of docs/serving.md). A benchmark, not a test.

    detres bench-serve --ckpt runs/demo/model_final.pth --images datasets/shapes/coco/val
    detres bench-serve --ckpt runs/demo/model_final.pth --setups batched --concurrency 16 --requests 256 device=cuda

Setups: batch1 (serve.max_batch=1), batched (serve.max_batch=--max-batch: images of one padded size share a
forward), padded (the same with serve.pad_batch=true: any sizes share a forward), onnxruntime and openvino (the
checkpoint exported once to ONNX, served with max_batch 1: the runtimes run one image per call).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from detres.cli import add_overrides, run_main, tool_parser
from detres.errors import UserError
from detres.io.atomic import write_atomic
from detres.io.folders import find_images
from detres.perf.serve_bench import (
    EXPORTED,
    SETUPS,
    ServerProcess,
    bench_env,
    export_for_runtimes,
    format_serve_table,
    offline_ceiling,
    run_load,
)

log = logging.getLogger("detres.bench_serve")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--ckpt", required=True, metavar="PTH", help="detection checkpoint, e.g. "
                        "runs/demo/model_final.pth")
    parser.add_argument("--images", type=Path, default=Path("datasets/shapes/coco/val"), metavar="DIR",
                        help="images the clients send (cycled) and infer reads, e.g. datasets/shapes/coco/val")
    parser.add_argument("--setups", default="batch1,batched,padded,onnxruntime,openvino", metavar="LIST",
                        help=f"comma-separated setups among {', '.join(SETUPS)}, e.g. --setups batch1,batched")
    parser.add_argument("--concurrency", type=_ints, default=[1, 4, 16, 64], metavar="LIST",
                        help="clients sending at once, one level after another, e.g. --concurrency 1,16")
    parser.add_argument("--requests", type=int, default=64, metavar="N",
                        help="timed requests per level (after as many warm-up requests as clients), e.g. 256")
    parser.add_argument("--max-batch", type=int, default=8, metavar="N",
                        help="serve.max_batch of the batched and padded setups, e.g. --max-batch 16")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, metavar="MS",
                        help="serve.max_wait_ms of every setup, e.g. --max-wait-ms 5")
    parser.add_argument("--score-thr", type=float, default=0.5, metavar="SCORE",
                        help="the score threshold of the requests and of infer, e.g. 0.3")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="OMP_NUM_THREADS of the server and infer processes; 0 leaves the libraries' "
                             "defaults, e.g. --threads 2")
    parser.add_argument("--no-offline", action="store_true",
                        help="skip the `detres infer` row (default: measure it first)")
    parser.add_argument("--out", type=Path, default=None, metavar="JSON",
                        help="also write the rows as JSON, e.g. runs/bench_serve.json (default: print only)")
    add_overrides(parser, help="KEY=VALUE config overrides for the server and infer, e.g. device=cuda "
                               "serve.max_queue=256 (default: none)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    setups = [s for s in args.setups.split(",") if s]
    unknown = [s for s in setups if s not in SETUPS]
    if unknown:
        raise UserError(f"--setups {','.join(unknown)}: choose among {', '.join(SETUPS)}")
    payloads = [path.read_bytes() for path in find_images(args.images)]
    if not payloads:
        raise UserError(f"no images under {args.images}")
    env = bench_env(args.threads)
    rows, offline = [], None
    with tempfile.TemporaryDirectory(prefix="detres-bench-serve-") as tmp:
        tmp = Path(tmp)
        if not args.no_offline:
            offline = offline_ceiling(["--ckpt", args.ckpt], args.images, tmp / "infer", score_thr=args.score_thr,
                                      overrides=args.overrides, env=env)
            log.info("detres infer: %.2f images/s over %d images", offline["images_per_second"], offline["images"])
        export = export_for_runtimes(args.ckpt, tmp / "export", env=env) if set(setups) & set(EXPORTED) else None
        for setup in setups:
            model = ["--model", str(export)] if setup in EXPORTED else ["--ckpt", args.ckpt]
            batch = ["--max-batch", str(args.max_batch)] if setup in ("batched", "padded") else []
            server = ServerProcess([*model, *SETUPS[setup], *batch, "--max-wait-ms", str(args.max_wait_ms),
                                    *args.overrides], tmp / f"{setup}.log", env=env)
            try:
                server.wait_ready()
                for concurrency in args.concurrency:
                    row = {"setup": setup, **run_load(server.url, payloads, concurrency=concurrency,
                                                      requests=args.requests, score_thr=args.score_thr)}
                    log.info("%s, %d clients: %.2f images/s, p50 %.0f ms, p99 %.0f ms", setup, concurrency,
                             row["images_per_second"], row["p50_ms"], row["p99_ms"])
                    rows.append(row)
            finally:
                server.stop()
    print(format_serve_table(rows, offline))
    if args.out is not None:
        write_atomic(args.out, json.dumps({"rows": rows, "offline": offline}, indent=1))
    return 0


if __name__ == "__main__":
    run_main(main)
