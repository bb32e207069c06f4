"""The FastAPI application: POST /v1/detect, GET /metrics, the /v2 routes, the middleware every request passes
(access log and metrics, bearer tokens, body limit) and the JSON error replies (400, 401, 404,
405, 413, 503) that keep the server serving whatever a client sends."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from detres.engine.folder_inference import model_input
from detres.serve import v2
from detres.serve.access_log import AccessLog
from detres.serve.auth import BearerAuth, read_tokens
from detres.serve.batcher import Batcher
from detres.serve.decoding import Job, parse_score_thr
from detres.serve.detection import BatchDetector
from detres.serve.http_errors import HTTPError, error_response
from detres.serve.limits import BodyLimit
from detres.serve.metrics import ServeMetrics
from detres.serve.state import ServeState, detect_one

log = logging.getLogger("detres.serve")
ROUTES_HELP = "POST /v1/detect, GET /metrics, GET /v2/health/live|ready, GET /v2/models/<name>, POST " \
              "/v2/models/<name>/infer"


def build_app(detector: BatchDetector, *, backend: str) -> FastAPI:
    """The server of one detector (its config is `detector.cfg`): the model thread starts with the app and the
    model is warmed up in the background, `ready` once done; on shutdown the queue is drained."""
    cfg = detector.cfg
    batcher = Batcher(detector, max_batch=cfg.serve.max_batch, max_wait_ms=cfg.serve.max_wait_ms,
                      max_queue=cfg.serve.max_queue)
    metrics = ServeMetrics(queue_depth=batcher.depth)
    detector.on_forward = metrics.forward
    state = ServeState(cfg=cfg, batcher=batcher, decode_pool=ThreadPoolExecutor(cfg.serve.decode_threads,
                                                                               thread_name_prefix="detres-decode"),
                       metrics=metrics, class_map=detector.class_map, backend=backend)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        task = asyncio.get_running_loop().run_in_executor(state.decode_pool, _warm_up, detector, state)
        task.add_done_callback(_report_warm_up_failure)
        state.tasks.add(task)
        yield
        log.info("shutting down: draining the queue (%d waiting)", batcher.depth())
        await asyncio.get_running_loop().run_in_executor(None, batcher.close, cfg.serve.shutdown_timeout_s)
        state.decode_pool.shutdown(wait=True)
        log.info("drained; bye")

    app = FastAPI(title="detres", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state
    app.include_router(v2.router)
    app.add_api_route("/v1/detect", detect, methods=["POST"])
    app.add_api_route("/metrics", prometheus, methods=["GET"])
    app.add_exception_handler(HTTPError, _http_error)
    app.add_exception_handler(StarletteHTTPException, _starlette_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    # added last = outermost: the access log sees every reply, auth runs before any body is read
    app.add_middleware(BodyLimit, max_bytes=int(cfg.serve.max_body_mb * 2**20))
    if cfg.serve.token_file:
        app.add_middleware(BearerAuth, digests=read_tokens(cfg.serve.token_file))
    app.add_middleware(AccessLog, metrics=metrics)
    return app


def _report_warm_up_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the warm-up forward failed, the server stays not ready: %r", task.exception())


def _warm_up(detector: BatchDetector, state: ServeState) -> None:
    """One forward of an image at the test scale before `ready`: the first call allocates and compiles."""
    side = detector.cfg.data.input.test_scale
    rgb = np.full((side, side, 3), 114, np.uint8)
    job = Job(tensor=None if detector.cfg.test.tile_size > 0 else model_input(rgb, detector.cfg),
              orig_size=(side, side), score_thr=1.0, rgb=rgb)
    forward, detector.on_forward = detector.on_forward, lambda n: None  # the warm-up is no traffic
    try:
        detector([job])
    finally:
        detector.on_forward = forward
    state.ready = True
    log.info("ready: the model is loaded and warmed up")


async def detect(request: Request) -> dict:
    """The image as the body (image/*, application/octet-stream) or as the multipart field `image`;
    ?score_thr= as `detres infer --score-thr`."""
    state: ServeState = request.app.state.serve
    score_thr = parse_score_thr(request.query_params.get("score_thr"), state.cfg.serve.score_thr)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        field = form.get("image")
        if field is None:
            raise HTTPError(400, "the multipart form has no field 'image'; send the file as -F image=@photo.jpg")
        data = await field.read() if isinstance(field, UploadFile) else field.encode()
    else:
        data = await request.body()
    detections, batch, (height, width) = await detect_one(state, data, score_thr, name="request body")
    request.state.batch_size = batch
    return {"detections": detections, "width": width, "height": height}


async def prometheus(request: Request) -> Response:
    body, content_type = request.app.state.serve.metrics.exposition()
    return Response(body, media_type=content_type)


async def _http_error(request: Request, exc: HTTPError) -> Response:
    return error_response(exc.status, exc.message, exc.headers)


async def _starlette_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 404:
        message = f"no route {request.url.path}; the routes are {ROUTES_HELP}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {request.method} is not allowed on {request.url.path}; use {allowed}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    return error_response(400, f"bad request: {exc.errors()}")


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s: %r", request.method, request.url.path, exc)
    return error_response(500, f"internal error ({type(exc).__name__}); the server keeps serving, see its log")
