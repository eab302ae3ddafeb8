"""``POST /v1/chat/completions``.

This is the hot path, so FastAPI describes the route (OpenAPI, from the
signature of ``create_chat_completion``) but does not run its generic
request machinery here: ``ChatEndpoint``, a plain ASGI app, reads the body
within the size limit, checks the API key, validates the body straight from
its JSON bytes, calls ``create_chat_completion`` and sends its response.
Errors get the answers the rest of the API gives (``errors.response_for``),
in the order a client can act on: 413, then 401, then 422.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kathan.api import errors, responses
from kathan.api.deps import ApiKeyDep
from kathan.api.disconnect import unless_disconnected
from kathan.api.middleware import read_body
from kathan.api.sse import EventStreamResponse, encode_stream
from kathan.auth.authenticator import Authenticator
from kathan.auth.principal import Principal
from kathan.errors import (
    AuthenticationError,
    InternalServerError,
    KathanError,
    RequestValidationFailed,
)
from kathan.ids import random_id
from kathan.protocol.chat import ChatCompletion, ChatCompletionRequest
from kathan.service.chat import ChatService
from kathan.service.metering import Metering

logger = logging.getLogger(__name__)

PATH = "/v1/chat/completions"

_STREAM_DOC = {
    "description": "A chat completion, or with `stream: true` a stream of "
    "`chat.completion.chunk` server-sent events ending with `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


async def create_chat_completion(
    body: ChatCompletionRequest, principal: ApiKeyDep, request: Request
) -> Response:
    state = request.app.state
    service: ChatService = state.chat
    metering: Metering | None = state.metering
    meter = None
    if metering is not None:
        meter = metering.begin(principal, request_id=random_id(), streamed=bool(body.stream))
    if body.stream:
        chunks = await unless_disconnected(request.receive, service.stream(body, meter=meter))
        return EventStreamResponse(
            encode_stream(chunks),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    completion = await unless_disconnected(request.receive, service.complete(body, meter=meter))
    # Serialized here, once: FastAPI would validate the model again against response_model.
    return Response(completion.model_dump_json(), media_type="application/json")


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, as FastAPI's HTTPBearer reads it."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, rest = bytes(value).decode("latin-1").partition(" ")
            token = rest.strip()
            if scheme.lower() != "bearer" or not token:
                return None
            return token
    return None


def _issues(exc: ValidationError, raw: bytes) -> list[dict[str, Any]]:
    """Pydantic's errors as the seeds' ``detail`` items, located in the body."""
    if not raw.strip():
        return [{"loc": ["body"], "msg": "Field required", "type": "missing"}]
    return [
        errors.issue({**e, "loc": ("body",) if e["type"] == "json_invalid" else ("body", *e["loc"])})
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _partial_body(raw: bytes) -> dict[str, Any]:
    """What a rejected body says of its model and streaming, for its ledger row."""
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class ChatEndpoint:
    """The ASGI app of the chat route: key check, validation, then ``endpoint``.

    ``count(scope, status)`` is called once per request with the response status, or
    ``"disconnected"`` when none went out (for /metrics); ``max_body_bytes(scope)`` is
    the body limit.
    """

    def __init__(
        self,
        endpoint: Callable[[ChatCompletionRequest, Principal, Request], Any],
        *,
        max_body_bytes: Callable[[Scope], int],
        count: Callable[[Scope, str], None],
    ) -> None:
        self.endpoint = endpoint
        self.max_body_bytes = max_body_bytes
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = "disconnected"

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            response = await self._respond(scope, receive)
            if response is not None:
                await response(scope, receive, send_and_record)
        except Exception:
            if status != "disconnected":
                raise  # the response began: the server closes the connection
            logger.exception("chat request failed")
            await errors.render(InternalServerError())(scope, receive, send_and_record)
        finally:
            self.count(scope, status)

    async def _respond(self, scope: Scope, receive: Receive) -> Response | None:
        try:
            raw = await read_body(scope, receive, self.max_body_bytes(scope))
            if raw is None:
                return None  # the client left before sending its body
            state = scope["app"].state
            auth: Authenticator = state.auth
            token = bearer_token(scope)
            principal = None if token is None else await auth.verify(token)
            if principal is None:
                raise AuthenticationError()
            try:
                body = ChatCompletionRequest.model_validate_json(raw)
            except ValidationError as exc:
                error = RequestValidationFailed(_issues(exc, raw))
                await _record_rejected(state.metering, principal, raw, error)
                raise error from None
            response: Response = await self.endpoint(body, principal, Request(scope, receive))
            return response
        except Exception as exc:
            handled = errors.response_for(exc, scope)
            if handled is None:
                raise
            return handled


async def _record_rejected(
    metering: Metering | None, principal: Principal, raw: bytes, error: KathanError
) -> None:
    """A chat request from a known caller that failed validation still gets its ledger row."""
    if metering is None:
        return
    body = _partial_body(raw)
    meter = metering.begin(principal, request_id=random_id(),
                           streamed=body.get("stream") is True)
    model = body.get("model")
    meter.model = model[:200] if isinstance(model, str) else ""
    await meter.fail(error)


class ChatRoute(APIRoute):
    """FastAPI's route, described as usual, served by ``ChatEndpoint``."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.app: ASGIApp = ChatEndpoint(
            endpoint,
            max_body_bytes=lambda scope: int(scope["app"].state.settings.max_body_bytes),
            count=lambda scope, status: scope["app"].state.metrics.count_request(status),
        )


router = APIRouter()
router.add_api_route(
    PATH,
    create_chat_completion,
    methods=["POST"],
    response_model=ChatCompletion,
    responses={200: _STREAM_DOC, **responses.errors(400, 401, 403, 404, 413, 422, 429, 503)},
    route_class_override=ChatRoute,
)


def route_app() -> ASGIApp:
    """The app that serves the chat route (for the shortcut past the router)."""
    for route in router.routes:
        if isinstance(route, ChatRoute):
            return route.app
    raise LookupError("the chat route is missing")
