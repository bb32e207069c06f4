"""Serve a detector over HTTP: POST /v1/detect, the KServe v2 protocol, Prometheus metrics (docs/serving.md).

    detres serve --ckpt runs/demo/model_final.pth                       # http://127.0.0.1:8080
    curl --data-binary @datasets/shapes/coco/val/000000.jpg http://127.0.0.1:8080/v1/detect?score_thr=0.3
    detres serve --model runs/demo_export test.backend=openvino --port 9000 --token-file tokens.txt

Every option below sets a serve.* key of the config (also settable as KEY=VALUE, e.g. serve.max_queue=128);
serve.retry_after_s (the Retry-After of a 503, 1) and serve.shutdown_timeout_s (how long in-flight requests may
take after SIGTERM, 30) are set that way only. Stop with SIGTERM or Ctrl-C: in-flight requests finish, exit 0.
"""

from __future__ import annotations

import logging

from detres.cli import add_overrides, run_main, tool_parser
from detres.cli.ckpt_config import add_model_source
from detres.distributed import resolve_device
from detres.engine.predictor import build_predictor, config_for_predictor
from detres.serve.app import build_app
from detres.serve.config_check import check_serve_config
from detres.serve.detection import BatchDetector
from detres.serve.server import serve

# flag -> (serve key, type, metavar, help); the default shown is the config's
SERVE_OPTIONS = {
    "--host": ("host", str, "ADDR", "address to listen on; 0.0.0.0 to accept other machines, e.g. --host 0.0.0.0 "
               "(default: serve.host, 127.0.0.1)"),
    "--port": ("port", int, "PORT", "TCP port, e.g. --port 9000 (default: serve.port, 8080)"),
    "--token-file": ("token_file", str, "FILE", "file of bearer tokens, one a line: every route but "
                     "/v2/health/* then needs 'Authorization: Bearer <token>' (default: serve.token_file, none)"),
    "--max-batch": ("max_batch", int, "N", "images detected together in one forward, e.g. --max-batch 16; 1 "
                    "turns batching off (default: serve.max_batch, 8)"),
    "--max-wait-ms": ("max_wait_ms", float, "MS", "how long the first image of a batch waits for more, e.g. "
                      "--max-wait-ms 5 (default: serve.max_wait_ms, 10)"),
    "--max-queue": ("max_queue", int, "N", "requests that may wait for the model; past it the server answers 503 "
                    "with Retry-After (default: serve.max_queue, 64)"),
    "--max-body-mb": ("max_body_mb", float, "MB", "request bodies above this many MiB get 413, e.g. "
                      "--max-body-mb 50 (default: serve.max_body_mb, 20)"),
    "--decode-threads": ("decode_threads", int, "N", "threads that decode and resize images off the model's "
                         "thread (default: serve.decode_threads, 2)"),
    "--score-thr": ("score_thr", float, "SCORE", "score threshold of a request that gives no ?score_thr=, as "
                    "`detres infer --score-thr` (default: serve.score_thr, 0.5)"),
    "--model-name": ("model_name", str, "NAME", "the model's name in the /v2/models/<name> routes "
                     "(default: serve.model_name, detres)"),
}


def main() -> int:
    parser = tool_parser(__doc__)
    add_model_source(parser)
    for flag, (key, kind, metavar, text) in SERVE_OPTIONS.items():
        parser.add_argument(flag, dest=f"serve_{key}", type=kind, default=None, metavar=metavar, help=text)
    parser.add_argument("--pad-batch", dest="serve_pad_batch", action="store_true", default=None,
                        help="pad images of different sizes into one forward, as training does: faster on mixed "
                             "sizes, but detections near the right and bottom borders may then differ slightly "
                             "from `detres infer`'s (sets serve.pad_batch; default: off, a batch holds images of "
                             "one padded size)")
    add_overrides(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ckpts = [args.ckpt] if args.ckpt else []
    cfg = config_for_predictor(args.cfg, ckpts=ckpts, model_dir=args.model, overrides=args.overrides)
    for key in [key for key, *_ in SERVE_OPTIONS.values()] + ["pad_batch"]:
        if getattr(args, f"serve_{key}") is not None:
            setattr(cfg.serve, key, getattr(args, f"serve_{key}"))
    check_serve_config(cfg)
    device = resolve_device(cfg.device)
    predictor = build_predictor(cfg, ckpts=ckpts, model_dir=args.model, device=device).eval()
    app = build_app(BatchDetector(predictor, predictor.class_map, cfg, device), backend=predictor.backend)
    logging.getLogger("detres.serve").info(
        "serving %s (%s, %s) on http://%s:%d, batches of up to %d images within %g ms, queue %d",
        args.ckpt or args.model, predictor.backend, device, cfg.serve.host, cfg.serve.port, cfg.serve.max_batch,
        cfg.serve.max_wait_ms, cfg.serve.max_queue)
    return serve(app, cfg)


if __name__ == "__main__":
    run_main(main)
