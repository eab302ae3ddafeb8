"""``POST /v1/chat/completions``, a ``GenerationRoute`` (``api/routes.py``).

The endpoint only translates: the request into ``ChatService``, the
``Generation`` it returns into SSE or one JSON completion. The key is checked
by ``deps.api_key`` before the body is judged (a 401 comes before a 422), the
body read by ``deps.read_json``. The streamed response owns the generation and
closes it however it ends.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from kathan.api import responses
from kathan.api.deps import api_key, read_json
from kathan.api.disconnect import unless_disconnected
from kathan.api.routes import GenerationRoute
from kathan.api.sse import EventStreamResponse, encode_stream
from kathan.protocol.chat import ChatCompletion, ChatCompletionRequest
from kathan.service.chat import ChatService
from kathan.service.metering import Meter, Metering

PATH = "/v1/chat/completions"

_STREAM_DOC = {
    "description": "A chat completion, or with `stream: true` a stream of "
    "`chat.completion.chunk` server-sent events ending with `data: [DONE]`.",
    # OpenAPI 3.1 reads an event stream's schema as the schema of one event.
    "content": {"text/event-stream": {"schema": {
        "type": "object",
        "description": "One event: `data` is a `chat.completion.chunk` as JSON (an error "
        "object in an `error` event), or `[DONE]` at the end.",
        "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
        "required": ["data"],
    }}},
}


async def create_chat_completion(request: Request) -> Response:
    """A chat completion, OpenAI's shape, plus the seeds' voice fields."""
    principal = await api_key(request)
    body = await read_json(request, ChatCompletionRequest, principal)
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
            return EventStreamResponse(encode_stream(chunks), owner=generation,
                                       headers=meter.rate_headers() if meter else None)
        except BaseException:
            await generation.aclose()  # the response that would own it does not exist
            raise
    completion = await unless_disconnected(request.receive, service.complete(body, meter=meter))
    # Serialized here, once: FastAPI would validate the model again against response_model.
    return Response(completion.model_dump_json(), media_type="application/json",
                    headers=meter.rate_headers() if meter else None)


route = GenerationRoute(
    PATH, create_chat_completion, body=ChatCompletionRequest, answer=ChatCompletion,
    responses={200: _STREAM_DOC, **responses.errors(400, 401, 403, 404, 413, 422, 429, 503)},
    summary="Create Chat Completion",
)
