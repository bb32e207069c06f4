"""The request-body limit (serve.max_body_mb): 413 from the Content-Length header before anything is read, and
for a body without one (chunked) as soon as the bytes received pass the limit.

FastAPI's own `max_body_size` is not used: when Content-Length is over the limit it replies in plain text,
replacing the JSON error that every reply of this server carries."""

from __future__ import annotations

from detres.serve.http_errors import HTTPError, error_response


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413; the route reading it sees HTTPError(413)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _message(self) -> str:
        return (f"request body over the limit of {self.max_bytes / 2**20:.3g} MiB (serve.max_body_mb); send a "
                "smaller image or raise the limit")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await error_response(413, self._message())(scope, receive, send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPError(413, self._message())
            return message

        await self.app(scope, limited_receive, send)
