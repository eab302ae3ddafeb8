"""Renders every error once, in both the OpenAI and the seeds' shape."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from kathan.errors import (
    KathanError,
    NotFoundError,
    RequestValidationFailed,
    ServiceUnavailableError,
)


def render(exc: KathanError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def issue(error: Any) -> dict[str, Any]:
    """One item of the seeds' ``detail`` array, from a pydantic error."""
    return {
        "loc": [p if isinstance(p, int) else str(p) for p in error.get("loc", ())],
        "msg": str(error.get("msg", "")),
        "type": str(error.get("type", "value_error")),
    }


async def _kathan_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KathanError)
    return render(exc)


logger = logging.getLogger(__name__)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return render(RequestValidationFailed([issue(e) for e in exc.errors()]))


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
    if exc.status_code == 404:
        return render(NotFoundError(f"No route for {request.method} {request.url.path}"))
    return render(_HTTPError(exc.status_code, str(exc.detail), exc.headers))


_STORE_ERRORS = (OperationalError, InterfaceError, ConnectionError)


def _store_unavailable(method: str, path: str, exc: Exception) -> JSONResponse:
    """The store (database) failed: the request can be retried, it is not a bug to report."""
    logger.error("store error on %s %s: %s", method, path, type(exc).__name__)
    return render(ServiceUnavailableError(
        "The account store is unavailable right now. Retry shortly.", retry_after=2,
        code="store_unavailable"))


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    return _store_unavailable(request.method, request.url.path, exc)


def response_for(exc: Exception, scope: Scope) -> JSONResponse | None:
    """The answer to an error raised by an app that runs outside FastAPI's exception
    handlers (the chat route), as those handlers give it; None for a bug (a 500)."""
    if isinstance(exc, KathanError):
        return render(exc)
    if isinstance(exc, _STORE_ERRORS):
        return _store_unavailable(scope["method"], scope["path"], exc)
    return None


def install(app: FastAPI) -> None:
    app.add_exception_handler(KathanError, _kathan_error)
    for kind in _STORE_ERRORS:
        app.add_exception_handler(kind, _store_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
