"""Renders every error once, in both the OpenAI and the seeds' shape."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from kathan.errors import (
    KathanError,
    NotFoundError,
    RequestValidationFailed,
    ServiceUnavailableError,
)


def render(exc: KathanError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def _issue(error: Any) -> dict[str, Any]:
    return {
        "loc": [p if isinstance(p, int) else str(p) for p in error.get("loc", ())],
        "msg": str(error.get("msg", "")),
        "type": str(error.get("type", "value_error")),
    }


async def _kathan_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KathanError)
    return render(exc)


logger = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    error = RequestValidationFailed([_issue(e) for e in exc.errors()])
    if request.url.path == CHAT_PATH:
        await _record_rejected_chat(request, exc, error)
    return render(error)


async def _record_rejected_chat(
    request: Request, exc: RequestValidationError, error: KathanError
) -> None:
    """A chat request from a known caller that failed validation still gets its ledger row."""
    principal = getattr(request.state, "principal", None)
    metering = getattr(request.app.state, "metering", None)
    if principal is None or metering is None:
        return
    body = exc.body if isinstance(exc.body, dict) else {}
    meter = metering.begin(principal, request_id=uuid.uuid4().hex,
                           streamed=body.get("stream") is True)
    model = body.get("model")
    meter.model = model[:200] if isinstance(model, str) else ""
    await meter.fail(error)


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


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    """The store (database) failed: the request can be retried, it is not a bug to report."""
    logger.error("store error on %s %s: %s", request.method, request.url.path,
                 type(exc).__name__)
    return render(ServiceUnavailableError(
        "The account store is unavailable right now. Retry shortly.", retry_after=2,
        code="store_unavailable"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(KathanError, _kathan_error)
    app.add_exception_handler(OperationalError, _store_error)
    app.add_exception_handler(InterfaceError, _store_error)
    app.add_exception_handler(ConnectionError, _store_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
