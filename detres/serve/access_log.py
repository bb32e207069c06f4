"""One log line and the metrics of every request: method, path, status, milliseconds and, for a detection, the
number of images in its forward (uvicorn's own access log is off: it cannot know the batch size)."""

from __future__ import annotations

import logging
import time

from detres.serve.metrics import ServeMetrics

log = logging.getLogger("detres.serve.access")


class AccessLog:
    """ASGI middleware; a route reports its batch size in `request.state.batch_size`."""

    def __init__(self, app, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tic = time.perf_counter()
        status = 500  # a reply never started counts as a server error

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - tic
            route = getattr(scope.get("route"), "path", None) or "unmatched"  # the template: bounded label values
            self.metrics.request(route, status, seconds)
            batch = scope.get("state", {}).get("batch_size", "-")
            log.info("%s %s %d %.1f ms batch %s", scope["method"], scope["path"], status, seconds * 1000, batch)
