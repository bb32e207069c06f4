"""The one shape of every error reply: a status, `{"error": "..."}` naming the problem, optional headers."""

from __future__ import annotations

from starlette.responses import JSONResponse


class HTTPError(Exception):
    """A request the server refuses: `status` (4xx/5xx), a message for the client, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
