"""``POST /v1/chat/completions``: an ordinary FastAPI route.

The key is checked by the same dependency as every model route
(``deps.require_api_key``); the body is read and validated by
``deps.json_body`` straight from its JSON bytes, whatever the content type;
errors are raised and rendered by the app's handlers (``api/errors.py``).
The route only translates: the request into ``ChatService``, the
``Generation`` it returns into SSE or one JSON completion. The streamed
response owns the generation and closes it however it ends.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kathan.api import responses
from kathan.api.deps import ApiKeyDep, json_body
from kathan.api.disconnect import unless_disconnected
from kathan.api.sse import EventStreamResponse, encode_stream
from kathan.protocol.chat import ChatCompletion, ChatCompletionRequest
from kathan.service.chat import ChatService
from kathan.service.metering import Meter, Metering

PATH = "/v1/chat/completions"

_STREAM_DOC = {
    "description": "A chat completion, or with `stream: true` a stream of "
    "`chat.completion.chunk` server-sent events ending with `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}

ChatBody = Annotated[ChatCompletionRequest, Depends(json_body(ChatCompletionRequest))]

router = APIRouter()


@router.post(
    PATH,
    response_model=ChatCompletion,
    responses={200: _STREAM_DOC, **responses.errors(400, 401, 403, 404, 413, 422, 429, 503)},
    openapi_extra=responses.request_body(ChatCompletionRequest),
)
async def create_chat_completion(
    body: ChatBody, principal: ApiKeyDep, request: Request
) -> Response:
    state = request.app.state
    service: ChatService = state.chat
    metering: Metering | None = state.metering
    meter: Meter | None = None
    if metering is not None:
        meter = metering.begin(principal, streamed=bool(body.stream))
    if body.stream:
        generation = await unless_disconnected(request.receive, service.open(body, meter=meter))
        try:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            chunks = service.stream_chunks(generation, include_usage=include_usage)
            return EventStreamResponse(encode_stream(chunks), owner=generation)
        except BaseException:
            await generation.aclose()  # the response that would own it does not exist
            raise
    completion = await unless_disconnected(request.receive, service.complete(body, meter=meter))
    # Serialized here, once: FastAPI would validate the model again against response_model.
    return Response(completion.model_dump_json(), media_type="application/json")
