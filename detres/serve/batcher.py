"""Dynamic batching: requests wait in a bounded queue; one model thread takes up to `max_batch` of them, or what
arrived within `max_wait_ms` of the first, and runs them together.

Written by hand because no well-kept library does this for a FastAPI app: LitServe, BentoML and Ray Serve batch,
but each is a whole server with its own HTTP layer, process model and metrics, and none bounds admission before
decoding or lets the runner group a batch by input size (what keeps batched detections equal to `detres infer`'s).

The queue between the event loop and the model thread is a `queue.Queue`, not an `asyncio.Queue`: the consumer is
a thread, and asyncio's queue is not thread-safe. Admission is counted from the moment a request is accepted
(before its image is decoded) to the moment the model thread takes it, so decoding requests count against
`max_queue` too and nothing grows without bound under overload.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("detres.serve")
_STOP = object()


class OverloadedError(Exception):
    """The queue is full: the caller answers 503 with Retry-After."""


class Batcher:
    """`reserve()` a place, then `submit(item)` (an awaitable of the item's result) or `release()` it.

    run_batch(items) -> one result per item, run on the model thread; an exception fails every item of that call.
    """

    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], *, max_batch: int, max_wait_ms: float,
                 max_queue: int) -> None:
        self._run_batch = run_batch
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue + 1)  # + 1: room for the stop marker
        self._admitted = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="detres-model", daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def depth(self) -> int:
        """Requests accepted and not yet taken by the model (decoding or queued)."""
        return self._admitted

    def reserve(self) -> None:
        """Admit one request, or raise OverloadedError when `max_queue` are already waiting (or the server stops)."""
        with self._lock:
            if self._closed or self._admitted >= self.max_queue:
                raise OverloadedError
            self._admitted += 1

    def release(self) -> None:
        """Give back a reserved place whose request ended before it was submitted (a bad image)."""
        with self._lock:
            self._admitted -= 1

    def submit(self, item: Any) -> asyncio.Future:
        """Queue a reserved item; the future gets its result on this event loop."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put_nowait((item, future, loop))  # never full: reserve() bounds the queue
        return future

    def close(self, timeout: float) -> None:
        """Stop taking requests, run every queued one (the drain), then stop the model thread."""
        with self._lock:
            self._closed = True
        if self._thread.is_alive():
            self._queue.put(_STOP, timeout=timeout)
            self._thread.join(timeout)

    def _take(self, block_s: float | None):
        entry = self._queue.get(timeout=block_s) if block_s is None or block_s > 0 else self._queue.get_nowait()
        if entry is not _STOP:
            with self._lock:
                self._admitted -= 1
        return entry

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._take(None)
            if first is _STOP:
                break
            batch, deadline = [first], time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    entry = self._take(deadline - time.monotonic())
                except queue.Empty:
                    break
                if entry is _STOP:  # run what was taken, then stop: everything queued before the marker is served
                    stopping = True
                    break
                batch.append(entry)
            self._run(batch)

    def _run(self, batch: list) -> None:
        items = [item for item, _, _ in batch]
        try:
            results = self._run_batch(items)
        except Exception as exc:  # noqa: BLE001 - one failing batch fails its requests, never the server
            log.exception("the model failed on a batch of %d", len(items))
            results = [exc] * len(items)
        for (_, future, loop), result in zip(batch, results):
            loop.call_soon_threadsafe(_settle, future, result)


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
