"""What the routes share: the config, the batcher, the decoding pool, the metrics, readiness; and `detect_one`,
the path of every image from its bytes to its detections, whichever protocol brought it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from detres.config import Config
from detres.data.records import ClassMap
from detres.serve.batcher import Batcher, OverloadedError
from detres.serve.decoding import decode_job
from detres.serve.http_errors import HTTPError
from detres.serve.metrics import ServeMetrics


@dataclass
class ServeState:
    cfg: Config
    batcher: Batcher
    decode_pool: ThreadPoolExecutor
    metrics: ServeMetrics
    class_map: ClassMap
    backend: str
    ready: bool = False
    tasks: set = field(default_factory=set)

    def retry_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.cfg.serve.retry_after_s)}


async def detect_one(state: ServeState, data: bytes, score_thr: float, *,
                     name: str = "image") -> tuple[list[dict], int, tuple[int, int]]:
    """(detections as `detres infer` writes them, images in its forward, (height, width)) of one encoded image.

    503 with Retry-After before the model is warm and when serve.max_queue requests already wait; 400/413 for
    an image that cannot be decoded or is too large (decoded on the pool, off the model's thread)."""
    if not state.ready:
        raise HTTPError(503, "the model is still loading or warming up; retry shortly (GET /v2/health/ready says "
                        "when it is ready)", state.retry_headers())
    try:
        state.batcher.reserve()
    except OverloadedError:
        raise HTTPError(503, f"overloaded: {state.cfg.serve.max_queue} requests are already waiting "
                        "(serve.max_queue); retry after the Retry-After seconds", state.retry_headers()) from None
    loop = asyncio.get_running_loop()
    try:
        job = await loop.run_in_executor(state.decode_pool, partial(decode_job, data, state.cfg, score_thr, name=name))
    except BaseException:
        state.batcher.release()
        raise
    detections, batch = await state.batcher.submit(job)
    return detections, batch, job.orig_size
