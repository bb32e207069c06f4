"""Prometheus metrics of one server (prometheus_client), in a registry of its own: requests by route and status,
request latency, images per forward, the queue depth and the images detected per second."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
RATE_WINDOW_S = 10.0  # images per second over the last 10 s: recent enough to follow load, long enough to be steady


class ServeMetrics:
    """The counters the routes, the batcher and the model thread update; `exposition()` is GET /metrics."""

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("detres_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("detres_request_seconds", "request latency from the first byte to the reply",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("detres_batch_size", "images in one forward of the model",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.images = Counter("detres_images", "images detected", registry=self.registry)
        Gauge("detres_queue_depth", "requests accepted and waiting for the model", registry=self.registry
              ).set_function(queue_depth)
        Gauge("detres_images_per_second", f"images detected per second over the last {RATE_WINDOW_S:g} s",
              registry=self.registry).set_function(self.images_per_second)
        self._done: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def forward(self, images: int) -> None:
        """One forward of `images` images finished (called on the model thread)."""
        self.batch_size.observe(images)
        self.images.inc(images)
        with self._lock:
            self._done.append((time.monotonic(), images))

    def images_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._done and self._done[0][0] < now - RATE_WINDOW_S:
                self._done.popleft()
            return sum(n for _, n in self._done) / RATE_WINDOW_S

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) in Prometheus' text format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
