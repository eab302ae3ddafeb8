"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API,
``GenerationRoute``s like chat's.

The request is translated once (``protocol/messages.to_chat``) into the chat request
that every backend serves, and takes the one request path: the key (``x-api-key`` or
``Authorization: Bearer``), limits, ledger row, routing, voice. The deltas that come
back are rendered in Anthropic's shape: one ``message``, or its stream of events
(``message_start``, ``content_block_start``/``_delta``/``_stop`` with ``text_delta``,
``input_json_delta``, and for reasoning a ``thinking`` block's ``thinking_delta`` and
``signature_delta`` (an anthropic deployment's signature; other backends sign nothing,
and the block's signature is empty), ``message_delta``, ``message_stop``, ``ping``); errors as
``{"type": "error", "error": {...}}`` (``api/errors.render`` picks the dialect by
path). ``anthropic-version`` is accepted whatever its value.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kathan.api import responses
from kathan.api.deps import api_key, read_json, translated
from kathan.api.disconnect import unless_disconnected
from kathan.api.errors import sse_error
from kathan.api.routes import GenerationRoute
from kathan.api.sse import EventStreamResponse, encode
from kathan.backends.anthropic import AnthropicBackend
from kathan.backends.base import TokenUsage
from kathan.backends.upstream import UpstreamError
from kathan.errors import InvalidRequestError
from kathan.protocol import messages as wire
from kathan.protocol.chat import ChatCompletionRequest
from kathan.service.chat import ChatService
from kathan.service.generation import Generation
from kathan.service.metering import Meter

PATH = "/v1/messages"
COUNT_PATH = "/v1/messages/count_tokens"

_STREAM_DOC = {
    "description": "A message, or with `stream: true` Anthropic's stream of events.",
    "content": {"text/event-stream": {"schema": {
        "type": "object",
        "description": "One event: `event` names it (`message_start`, `content_block_delta`, "
        "...), `data` is its JSON.",
        "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
        "required": ["data"],
    }}},
}


def _stop(finish: str | None, matched: str | None,
          asked: tuple[str, ...]) -> tuple[wire.StopReason, str | None]:
    """Anthropic's stop reason and stop sequence: ``stop_sequence`` when the choice ended
    on one of the request's own stop sequences (not the template's markup)."""
    if finish == "stop" and matched is not None and matched in asked:
        return "stop_sequence", matched
    return wire.stop_reason(finish), None


def _usage(usage: TokenUsage | None) -> wire.MessagesUsage:
    if usage is None:
        return wire.MessagesUsage(input_tokens=0, output_tokens=0)
    return wire.MessagesUsage(
        input_tokens=usage.prompt_tokens - usage.cached_tokens,
        output_tokens=usage.completion_tokens, cache_read_input_tokens=usage.cached_tokens)


async def _collect(
    service: ChatService, chat: ChatCompletionRequest, meter: Meter | None,
    asked: tuple[str, ...],
) -> wire.MessageResponse:
    """The whole message: the same deltas the stream renders, gathered in the same
    blocks."""
    generation = await service.open(chat, meter=meter)
    blocks: list[wire.OutThinking | wire.OutText | list[str]] = []  # a call: [id, name, args]
    calls: dict[int, list[str]] = {}  # a tool call's index -> its block
    finish = matched = None
    usage: TokenUsage | None = None
    async with generation:
        async for delta in generation:
            if delta.usage is not None:
                usage = delta.usage
            if delta.index != 0:
                continue
            last = blocks[-1] if blocks else None
            if delta.reasoning:
                if not isinstance(last, wire.OutThinking) or last.signature:
                    last = wire.OutThinking(thinking="")
                    blocks.append(last)
                last.thinking += delta.reasoning
            if delta.signature:
                if not isinstance(last, wire.OutThinking):
                    last = wire.OutThinking(thinking="")  # redacted: a signature alone
                    blocks.append(last)
                last.signature += delta.signature
            if delta.content:
                if not isinstance(last, wire.OutText):
                    last = wire.OutText(text="")
                    blocks.append(last)
                last.text += delta.content
            for call in delta.tool_calls:
                held = calls.get(call.index)
                if held is None:
                    held = calls[call.index] = [call.id or "", call.name or "", ""]
                    blocks.append(held)
                held[0], held[1] = held[0] or call.id or "", held[1] or call.name or ""
                held[2] += call.arguments
            if delta.finish_reason is not None:
                finish, matched = delta.finish_reason, delta.stop
    content: list[wire.OutThinking | wire.OutText | wire.OutToolUse] = []
    for number, block in enumerate(blocks):
        if isinstance(block, list):
            call_id, name, arguments = block
            content.append(wire.OutToolUse(id=call_id or f"toolu_{number}", name=name,
                                           input=_arguments(arguments)))
        else:
            content.append(block)
    reason, sequence = _stop(finish, matched, asked)
    return wire.MessageResponse(
        id=_message_id(f"chatcmpl-{generation.request_id}"), model=generation.model,
        content=content, stop_reason=reason, stop_sequence=sequence, usage=_usage(usage))


def _message_id(chat_id: str) -> str:
    return "msg_" + chat_id.removeprefix("chatcmpl-")


def _arguments(text: str) -> dict[str, Any]:
    """A call's arguments as the object Anthropic's ``input`` is (a model that wrote
    something else gets it under ``_raw``, rather than losing it)."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_raw": text}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return encode(json.dumps({"type": name, **data}, ensure_ascii=False), name)


async def _events(
    generation: Generation, asked: tuple[str, ...]
) -> AsyncGenerator[bytes, None]:
    """The generation's deltas as Anthropic's stream. Rendering only: the response owns
    and closes the generation."""
    yield _event("message_start", {"message": {
        "id": _message_id(f"chatcmpl-{generation.request_id}"), "type": "message",
        "role": "assistant", "model": generation.model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0}}})
    yield _event("ping", {})
    block = -1  # the index of the block being written
    kind: str | None = None  # its type: "thinking", "text" or "tool_use"
    signed = False  # the thinking block being written has its signature
    calls: dict[int, int] = {}  # a tool call's index -> its block
    finish: str | None = None
    matched: str | None = None
    usage = _usage(None)
    try:
        async for delta in generation:
            if delta.index != 0:
                continue  # n is 1: Messages has no choices
            if delta.reasoning or delta.signature:
                if kind != "thinking" or (signed and delta.reasoning):
                    if kind is not None:
                        yield _event("content_block_stop", {"index": block})
                    block, kind, signed = block + 1, "thinking", False
                    yield _event("content_block_start", {"index": block, "content_block": {
                        "type": "thinking", "thinking": "", "signature": ""}})
                if delta.reasoning:
                    yield _event("content_block_delta", {"index": block, "delta": {
                        "type": "thinking_delta", "thinking": delta.reasoning}})
                if delta.signature:
                    signed = True
                    yield _event("content_block_delta", {"index": block, "delta": {
                        "type": "signature_delta", "signature": delta.signature}})
            if delta.content:
                if kind != "text":
                    if kind is not None:
                        yield _event("content_block_stop", {"index": block})
                    block, kind = block + 1, "text"
                    yield _event("content_block_start", {
                        "index": block, "content_block": {"type": "text", "text": ""}})
                yield _event("content_block_delta", {
                    "index": block, "delta": {"type": "text_delta", "text": delta.content}})
            for call in delta.tool_calls:
                if call.index not in calls:
                    if kind is not None:
                        yield _event("content_block_stop", {"index": block})
                    block, kind = block + 1, "tool_use"
                    calls[call.index] = block
                    yield _event("content_block_start", {"index": block, "content_block": {
                        "type": "tool_use", "id": call.id or f"toolu_{block}",
                        "name": call.name or "", "input": {}}})
                if call.arguments:
                    yield _event("content_block_delta", {
                        "index": calls[call.index],
                        "delta": {"type": "input_json_delta", "partial_json": call.arguments}})
            if delta.finish_reason is not None:
                finish, matched = delta.finish_reason, delta.stop
            if delta.usage is not None:
                usage = _usage(delta.usage)
    except Exception as exc:  # noqa: BLE001 - every error ends the stream as its event
        yield sse_error(exc, anthropic=True)
        return
    if kind is not None:
        yield _event("content_block_stop", {"index": block})
    reason, sequence = _stop(finish, matched, asked)
    yield _event("message_delta", {
        "delta": {"stop_reason": reason, "stop_sequence": sequence},
        "usage": usage.model_dump()})
    yield _event("message_stop", {})


async def create_message(request: Request) -> Response:
    """A message, Anthropic's shape (its SDK's `client.messages.create` and `.stream`)."""
    body, chat, meter = await translated(request, wire.MessagesRequest, wire.to_chat)
    service: ChatService = request.app.state.chat
    asked = tuple(body.stop_sequences or ())
    if body.stream:
        generation = await unless_disconnected(request.receive, service.open(chat, meter=meter))
        try:
            return EventStreamResponse(_events(generation, asked), owner=generation,
                                       headers=meter.rate_headers() if meter else None)
        except BaseException:
            await generation.aclose()
            raise
    message = await unless_disconnected(request.receive, _collect(service, chat, meter, asked))
    return Response(message.model_dump_json(), media_type="application/json",
                    headers=meter.rate_headers() if meter else None)


async def count_message_tokens(request: Request) -> Response:
    """The prompt's size in tokens, as the model would see it: a local model counts with
    its own template and tokenizer; a model of ``anthropic`` deployments is counted by
    Anthropic (the request as the client sent it). Other upstreams cannot count."""
    principal = await api_key(request)
    body = await read_json(request, wire.CountTokensRequest, principal)
    registry = request.app.state.registry
    entry = registry.resolve(body.model, principal.may_use)
    if not principal.may_use(entry.id, entry.aliases):
        raise registry.missing(body.model, principal.may_use)
    count = getattr(entry.backend, "count_tokens", None)
    if count is not None:
        tokens: int = count(wire.count_request(body))
    else:
        tokens = await _upstream_count(entry.backend, body)
    return Response(wire.TokenCount(input_tokens=tokens).model_dump_json(),
                    media_type="application/json")


async def _upstream_count(backend: object, body: wire.CountTokensRequest) -> int:
    """Anthropic's count, from the model's anthropic deployments in the router's order
    (the next one when one cannot answer)."""
    counters = [route.backend for route in getattr(backend, "routes", ())
                if isinstance(route.backend, AnthropicBackend)]
    if not counters:
        raise InvalidRequestError(
            f"count_tokens counts the prompts of local models and of models served by "
            f"anthropic deployments; '{body.model}' is served by another provider, which "
            "has no such count.", param="model", code="unsupported_model")
    given = body.model_dump(mode="json", exclude_none=True, exclude={"model"})
    for i, counter in enumerate(counters):
        try:
            return await counter.count_tokens(given)
        except UpstreamError as error:
            if not error.retryable or i == len(counters) - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


route = GenerationRoute(
    PATH, create_message, body=wire.MessagesRequest, answer=wire.MessageResponse,
    responses={200: _STREAM_DOC, **responses.errors(
        400, 401, 403, 404, 413, 429, 503, model=wire.AnthropicErrorBody)},
    summary="Create Message (Anthropic)",
)
count_route = GenerationRoute(
    COUNT_PATH, count_message_tokens, body=wire.CountTokensRequest, answer=wire.TokenCount,
    responses={200: {"description": "The prompt's size in tokens."}, **responses.errors(
        400, 401, 403, 404, 413, 503, model=wire.AnthropicErrorBody)},
    summary="Count Message Tokens (Anthropic)",
)
