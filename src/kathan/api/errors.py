"""Every error Kathan answers, rendered here: ``render`` for a JSON response, ``sse_error``
for an event in a stream whose headers have gone out. Both take the one hierarchy
(``kathan.errors``); ``as_kathan_error`` maps what is not in it (a store that
cannot be reached, a bug) once, for both."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kathan.api.body import REFUSED
from kathan.api.explain import explain
from kathan.errors import (
    EngineError,
    InternalServerError,
    KathanError,
    NotFoundError,
    RequestValidationFailed,
    ServiceUnavailableError,
)

logger = logging.getLogger(__name__)


# Anthropic's Messages API answers errors in its own shape, on its own paths.
ANTHROPIC_PATHS = "/v1/messages"
_ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 409: "invalid_request_error", 413: "request_too_large",
    429: "rate_limit_error", 503: "overloaded_error",
}


def anthropic_body(exc: KathanError) -> tuple[int, dict[str, Any]]:
    """The status and body Anthropic's API would answer: ``{"type": "error", "error":
    {"type", "message"}}``; a body that breaks the schema is its 400, as there."""
    status = 400 if exc.status_code == 422 else exc.status_code
    return status, {"type": "error", "error": {
        "type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": exc.message}}


def render(exc: KathanError, path: str = "") -> JSONResponse:
    """The JSON answer to an error, in the dialect of the ``path`` it answers."""
    if path.startswith(ANTHROPIC_PATHS):
        status, body = anthropic_body(exc)
        return JSONResponse(body, status_code=status, headers=exc.headers)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def sse_error(exc: BaseException, *, anthropic: bool = False) -> bytes:
    """The ``error`` event that ends a stream whose headers have gone out."""
    error = as_kathan_error(exc, where="stream")
    if isinstance(error, InternalServerError):
        error = EngineError("The stream failed; see the server log.")
    data = json.dumps(anthropic_body(error)[1] if anthropic else error.body())
    return b"event: error\n" + b"".join(
        b"data: " + line.encode() + b"\n" for line in data.split("\n")) + b"\n"


def issue(error: Any) -> dict[str, Any]:
    """One item of the seeds' ``detail`` array, from a pydantic error."""
    return {
        "loc": [p if isinstance(p, int) else str(p) for p in error.get("loc", ())],
        "msg": str(error.get("msg", "")),
        "type": str(error.get("type", "value_error")),
    }


async def _kathan_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KathanError)
    return render(exc, request.url.path)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    refused = request.scope.get(REFUSED)
    if isinstance(refused, RequestValidationFailed):  # the body was not acceptable JSON
        return render(refused, request.url.path)
    errors = list(exc.errors())
    message, param = explain(errors, exc.body)
    return render(RequestValidationFailed([issue(e) for e in errors], message=message,
                                          param=param), request.url.path)


class _HTTPError(KathanError):
    """Starlette's own errors (unknown route, wrong method), in Kathan's shape."""

    error_type = "invalid_request_error"

    def __init__(
        self, status_code: int, message: str, headers: Mapping[str, str] | None
    ) -> None:
        super().__init__(message, headers=dict(headers or {}))
        self.status_code = status_code


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    path = request.url.path
    if exc.status_code == 404:
        return render(NotFoundError(f"No route for {request.method} {path}"), path)
    return render(_HTTPError(exc.status_code, str(exc.detail), exc.headers), path)


_STORE_ERRORS = (OperationalError, InterfaceError, ConnectionError)


def as_kathan_error(exc: BaseException, *, where: str) -> KathanError:
    """``exc`` in the hierarchy: itself, a 503 for a store that failed (the request can
    be retried), or a 500 for a bug, whose traceback goes to the log (once, here)."""
    if isinstance(exc, KathanError):
        return exc
    if isinstance(exc, _STORE_ERRORS):
        logger.error("store error in %s: %s", where, type(exc).__name__)
        return ServiceUnavailableError(
            "The account store is unavailable right now. Retry shortly.", retry_after=2,
            code="store_unavailable")
    logger.error("unexpected error in %s", where, exc_info=exc)
    return InternalServerError()


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    return render(as_kathan_error(exc, where=f"{request.method} {request.url.path}"),
                  request.url.path)


class NotedSend:
    """An ASGI ``send`` that notes whether the response has started (after that, an
    error can no longer be answered with a status of its own)."""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class ServerErrors:
    """A bug answers a 500 in Kathan's shape, logged once, instead of Starlette's plain
    text and a second traceback from the server. After the response began nothing can
    be answered: the error goes on, and the server closes the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        noted = NotedSend(send)
        try:
            await self.app(scope, receive, noted)
        except Exception as exc:
            if noted.started:
                raise
            error = as_kathan_error(exc, where=f"{scope['method']} {scope['path']}")
            await render(error, scope["path"])(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(KathanError, _kathan_error)
    for kind in _STORE_ERRORS:
        app.add_exception_handler(kind, _store_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(ServerErrors)
