"""``POST /v1/chat/completions``."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kathan.api import responses
from kathan.api.deps import ApiKeyDep
from kathan.api.disconnect import unless_disconnected
from kathan.api.sse import EventStreamResponse, encode_stream
from kathan.protocol.chat import ChatCompletion, ChatCompletionRequest
from kathan.service.chat import ChatService
from kathan.service.metering import Metering

router = APIRouter()

_STREAM_DOC = {
    "description": "A chat completion, or with `stream: true` a stream of "
    "`chat.completion.chunk` server-sent events ending with `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={200: _STREAM_DOC, **responses.errors(400, 401, 403, 404, 413, 422, 429, 503)},
)
async def create_chat_completion(
    body: ChatCompletionRequest, principal: ApiKeyDep, request: Request
) -> Response:
    # The app's resources are read from its state directly: this is the hot path, and
    # each FastAPI dependency costs a little on every request.
    state = request.app.state
    service: ChatService = state.chat
    metering: Metering | None = state.metering
    meter = None
    if metering is not None:
        meter = metering.begin(principal, request_id=uuid.uuid4().hex, streamed=bool(body.stream))
    if body.stream:
        chunks = await unless_disconnected(request, service.stream(body, meter=meter))
        return EventStreamResponse(
            encode_stream(chunks),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    completion = await unless_disconnected(request, service.complete(body, meter=meter))
    # Serialized here, once: FastAPI would validate the model again against response_model.
    return Response(completion.model_dump_json(), media_type="application/json")
