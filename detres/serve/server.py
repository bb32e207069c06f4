"""Run the app under uvicorn with a clean stop: on SIGTERM (or Ctrl-C) uvicorn stops accepting connections and
lets the requests in flight finish (up to serve.shutdown_timeout_s), then the app's shutdown drains the model's
queue, and the process exits 0.

uvicorn re-raises the signal it caught once it has shut down, so that the default action (death by SIGTERM,
status 143) follows; a handler installed here first is the one it restores and re-raises into, so the drained
server exits 0 as an orchestrator expects of a clean stop."""

from __future__ import annotations

import logging
import signal

import uvicorn

from detres.config import Config

log = logging.getLogger("detres.serve")


def _after_shutdown(signum, frame) -> None:
    log.info("stopped on %s after draining", signal.Signals(signum).name)


def serve(app, cfg: Config) -> int:
    """Serve `app` on serve.host:serve.port until SIGTERM/SIGINT; 0 after a clean stop.

    Connections are bounded too (uvicorn's limit_concurrency, past which it answers 503): what the queue admits
    plus room for the requests still sending their bodies or reading a reply."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _after_shutdown)
    config = uvicorn.Config(app, host=cfg.serve.host, port=cfg.serve.port, access_log=False, log_config=None,
                            timeout_graceful_shutdown=cfg.serve.shutdown_timeout_s,
                            limit_concurrency=64 + 4 * cfg.serve.max_queue, timeout_keep_alive=5)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
