"""``POST /v1/completions``: OpenAI's legacy completions, a ``GenerationRoute`` like chat's.

The request is translated once (``protocol/completions.to_chat``) into a chat request
that carries it, and takes the one request path (key, limits, ledger, routing): the
local engine continues the prompt as it is, without the chat template (and echoes
it); an ``openai`` deployment gets the request as sent and its ``text_completion``s
come back as deltas. Either way the deltas are rendered as ``text_completion``
objects: one, or a stream of them ending with ``data: [DONE]``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncGenerator, Iterable

from starlette.requests import Request
from starlette.responses import Response

from kathan.api import responses
from kathan.api.deps import translated
from kathan.api.disconnect import unless_disconnected
from kathan.api.routes import GenerationRoute
from kathan.api.sse import EventStreamResponse, encode_stream
from kathan.backends.base import Delta, TokenUsage
from kathan.protocol import completions as wire
from kathan.protocol.chat import ChatCompletionRequest, TokenLogprob
from kathan.service.accumulate import usage_of
from kathan.service.chat import ChatService
from kathan.service.generation import Generation
from kathan.service.metering import Meter

PATH = "/v1/completions"

_STREAM_DOC = {
    "description": "A text completion, or with `stream: true` a stream of "
    "`text_completion` server-sent events ending with `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {
        "type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"],
    }}},
}


class _Logprobs:
    """One choice's log probabilities in the legacy shape, with character offsets."""

    def __init__(self) -> None:
        self.offset = 0  # of the next token in the choice's text
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top: list[dict[str, float]] = []
        self.text_offset: list[int] = []

    def add(self, items: Iterable[TokenLogprob]) -> wire.CompletionLogprobs:
        """Record ``items``; returns the legacy object of just these."""
        part = wire.CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[],
                                       text_offset=[])
        for item in items:
            top = {t.token: t.logprob for t in item.top_logprobs}
            for tokens, logprobs, tops, offsets in (
                    (self.tokens, self.token_logprobs, self.top, self.text_offset),
                    (part.tokens, part.token_logprobs, part.top_logprobs, part.text_offset)):
                tokens.append(item.token)
                logprobs.append(item.logprob)
                assert tops is not None
                tops.append(top)
                offsets.append(self.offset)
            self.offset += len(item.token)
        return part

    def see(self, delta: Delta) -> wire.CompletionLogprobs | None:
        """Record a delta's log probabilities (the legacy object of just these), after
        moving past its text that has none: an echoed prompt, alone or before the
        tokens (an upstream's whole answer)."""
        text = len(delta.content or "")
        if not delta.logprobs:
            self.offset += text
            return None
        self.offset += max(0, text - sum(len(item.token) for item in delta.logprobs))
        return self.add(delta.logprobs)

    def whole(self) -> wire.CompletionLogprobs:
        return wire.CompletionLogprobs(tokens=self.tokens, token_logprobs=self.token_logprobs,
                                       top_logprobs=self.top, text_offset=self.text_offset)


def _finish(delta: Delta) -> str | None:
    reason = delta.finish_reason
    return reason if reason in ("stop", "length", "content_filter") else (
        None if reason is None else "stop")


async def _collect(
    service: ChatService, chat: ChatCompletionRequest, meter: Meter | None, want_logprobs: bool,
) -> wire.TextCompletion:
    generation = await service.open(chat, meter=meter)
    # By index: an upstream answers n choices per prompt of a request with several.
    texts: defaultdict[int, list[str]] = defaultdict(list)
    probs: defaultdict[int, _Logprobs] = defaultdict(_Logprobs)
    finishes: dict[int, str | None] = {}
    usage: TokenUsage | None = None
    async with generation:
        async for delta in generation:
            if delta.usage is not None:
                usage = delta.usage
            if delta.content:
                texts[delta.index].append(delta.content)
            probs[delta.index].see(delta)
            if delta.finish_reason is not None:
                finishes[delta.index] = _finish(delta)
    indices = sorted(set(range(generation.n)) | texts.keys() | finishes.keys())
    return wire.TextCompletion(
        id=f"cmpl-{generation.request_id}", created=generation.created, model=generation.model,
        choices=[wire.CompletionChoice(
            text="".join(texts[i]), index=i, finish_reason=finishes.get(i),
            logprobs=probs[i].whole() if want_logprobs else None)
            for i in indices],
        usage=usage_of(usage) if usage is not None else None)


async def _chunks(
    generation: Generation, include_usage: bool,
) -> AsyncGenerator[wire.TextCompletion, None]:
    """The deltas as ``text_completion`` chunks (rendering only: the response owns the
    generation). An echoed prompt comes as the deltas' first text, from the backend."""
    base = {"id": f"cmpl-{generation.request_id}", "created": generation.created,
            "model": generation.model}
    probs: defaultdict[int, _Logprobs] = defaultdict(_Logprobs)
    async for delta in generation:
        if delta.content or delta.logprobs or delta.finish_reason is not None:
            yield wire.TextCompletion(**base, choices=[wire.CompletionChoice(
                text=delta.content or "", index=delta.index, finish_reason=_finish(delta),
                logprobs=probs[delta.index].see(delta))])
        elif delta.usage is not None and include_usage:
            yield wire.TextCompletion(**base, choices=[], usage=usage_of(delta.usage))


async def create_completion(request: Request) -> Response:
    """A legacy text completion: the local model continues the prompt as it is; an
    OpenAI-compatible deployment gets the request as sent."""
    body, chat, meter = await translated(request, wire.CompletionRequest, wire.to_chat)
    service: ChatService = request.app.state.chat
    if body.stream:
        generation = await unless_disconnected(request.receive, service.open(chat, meter=meter))
        try:
            include = bool(body.stream_options and body.stream_options.include_usage) \
                or service.always_include_usage
            return EventStreamResponse(encode_stream(_chunks(generation, include)),
                                       owner=generation,
                                       headers=meter.rate_headers() if meter else None)
        except BaseException:
            await generation.aclose()
            raise
    completion = await unless_disconnected(
        request.receive, _collect(service, chat, meter, body.logprobs is not None))
    return Response(completion.model_dump_json(), media_type="application/json",
                    headers=meter.rate_headers() if meter else None)


route = GenerationRoute(
    PATH, create_completion, body=wire.CompletionRequest, answer=wire.TextCompletion,
    responses={200: _STREAM_DOC, **responses.errors(400, 401, 403, 404, 413, 422, 429, 503)},
    summary="Create Completion (legacy)",
)
