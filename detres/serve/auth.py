"""Bearer tokens (`--token-file`): every route but the health checks needs `Authorization: Bearer <token>`.

Tokens are compared as SHA-256 digests with hmac.compare_digest, against every token of the file, so neither the
time taken nor its dependence on the token's length tells an attacker how close a guess was."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from detres.errors import UserError
from detres.serve.http_errors import error_response

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})  # probes of orchestrators carry no token


def read_tokens(path: str) -> list[bytes]:
    """The SHA-256 digests of the tokens in `path`, one a line (blank lines and `#` comments skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--token-file {path}: cannot be read ({exc}); give a text file with one token a line") \
            from None
    tokens = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not tokens:
        raise UserError(f"--token-file {path} holds no token; write one token a line (e.g. from `openssl rand "
                        "-hex 32`)")
    return [hashlib.sha256(token.encode()).digest() for token in tokens]


def token_matches(header: bytes | None, digests: list[bytes]) -> bool:
    """Whether an Authorization header value is `Bearer <one of the tokens>`, in constant time."""
    if not header or header[:7].lower() != b"bearer ":
        return False
    given = hashlib.sha256(header[7:].strip()).digest()
    found = False
    for digest in digests:  # no early exit: every token is compared
        found |= hmac.compare_digest(given, digest)
    return found


class BearerAuth:
    """ASGI middleware: 401 with `WWW-Authenticate: Bearer` for a request without a valid token."""

    def __init__(self, app, digests: list[bytes]) -> None:
        self.app, self.digests = app, digests

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            header = dict(scope["headers"]).get(b"authorization")
            if not token_matches(header, self.digests):
                reason = "missing" if header is None else "wrong"
                response = error_response(401, f"{reason} bearer token: send 'Authorization: Bearer <token>' with "
                                          "a token of the server's --token-file",
                                          {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
