"""The serve.* keys checked before the model loads: a value the server cannot honour is a ConfigError naming
the key and the fix, never a server that misbehaves later."""

from __future__ import annotations

from detres.config import Config
from detres.errors import ConfigError
from detres.serve.auth import read_tokens

MINIMUM = {"max_batch": 1, "max_queue": 1, "decode_threads": 1, "max_wait_ms": 0, "retry_after_s": 0, "port": 0}
POSITIVE = ("max_body_mb", "shutdown_timeout_s")


def check_serve_config(cfg: Config) -> None:
    serve = cfg.serve
    for key, low in MINIMUM.items():
        if getattr(serve, key) < low:
            raise ConfigError(f"serve.{key}={getattr(serve, key)}: must be at least {low}")
    for key in POSITIVE:
        if not getattr(serve, key) > 0:
            raise ConfigError(f"serve.{key}={getattr(serve, key)}: must be above 0")
    if serve.port > 65535:
        raise ConfigError(f"serve.port={serve.port}: a TCP port is 0..65535, e.g. serve.port=8080")
    if not serve.model_name or "/" in serve.model_name:
        raise ConfigError(f"serve.model_name={serve.model_name!r}: give a name without '/', e.g. detres")
    if serve.token_file:
        read_tokens(serve.token_file)  # a missing or empty token file stops the start before the model loads
