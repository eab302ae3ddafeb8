"""``ChatService``: one chat request, from the resolved model to chunks or a completion."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator

from kathan.backends.base import Delta, ToolCallDelta, serves_raw_prompts
from kathan.errors import InvalidRequestError
from kathan.ids import random_id
from kathan.protocol.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceDelta,
    ChoiceLogprobs,
    FunctionCallDelta,
    StreamChunks,
    ToolCallChunk,
    construct,
)
from kathan.routing.registry import ModelRegistry
from kathan.service.accumulate import Accumulator, usage_of
from kathan.service.generation import Generation, end_meter
from kathan.service.metering import Meter
from kathan.service.metrics import Metrics
from kathan.service.voice import check_voice_pair, speak, voice_length, voice_request
from kathan.voice.profile import voice_of


def _add_calls(delta: ChoiceDelta, calls: tuple[ToolCallDelta, ...], legacy: bool) -> None:
    if legacy:
        # The legacy form has one call per reply and no ids.
        call = calls[0]
        delta.function_call = construct(FunctionCallDelta, 
            name=call.name, arguments="".join(c.arguments for c in calls)
        )
        return
    delta.tool_calls = [
        construct(ToolCallChunk, 
            index=c.index,
            id=c.id,
            type="function" if c.id is not None else None,
            function=construct(FunctionCallDelta, name=c.name, arguments=c.arguments),
        )
        for c in calls
    ]


class ChatService:
    """Opens a chat request as a ``Generation``, and renders one as chunks or as a
    whole completion.

    ``open`` raises ``KathanError`` before any output exists; the generation it
    returns is the caller's to close (``chunks`` only renders it). ``complete``
    opens, reads and closes in one call.
    """

    def __init__(
        self, registry: ModelRegistry, metrics: Metrics, *, always_include_usage: bool = False
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        # Every stream ends with a usage chunk, asked for or not (settings.always_include_usage).
        self.always_include_usage = always_include_usage

    async def open(
        self, request: ChatCompletionRequest, *, meter: Meter | None = None
    ) -> Generation:
        """Resolve the model, admit the request (with a ``meter``: the caller's allow-list
        and limits), apply the voice and open the backend. However this fails, the
        meter's ledger row is written before the error is raised."""
        started = time.perf_counter()
        try:
            check_voice_pair(request)
            voice = voice_of(request.finetune, request.language, request.gender, request.accent)
            # Without metering every caller is a static admin key: every model.
            visible = meter.principal.may_use if meter is not None else _every_model
            entry = self.registry.resolve(request.model, visible)
            entry.ceilings.check(entry.id, request)
            if request._completion is not None and not serves_raw_prompts(entry.backend):
                raise InvalidRequestError(
                    f"Model '{request.model}' is served by a provider without legacy "
                    "completions (anthropic, gemini): /v1/completions is served by the "
                    "local model and by openai deployments. Use /v1/chat/completions.",
                    param="model", code="unsupported_endpoint")
            answering = entry
            if voice is not None and voice.finetune and entry.voice_model is not None:
                answering = self.registry.resolve(entry.voice_model)
            key_cap = meter.principal.limits.max_tokens if meter is not None else None
            if voice is not None:
                request = voice_length(request, answering.voice_max_tokens,
                                       answering.ceilings.max_tokens, key_cap)
            if meter is not None:
                request = within_key_cap(request, key_cap)
                await meter.admit(entry.id, entry.aliases)
            if voice is not None:
                request = voice_request(request, voice)
                if answering is not entry:
                    # The response's `model` names the variant that answered.
                    entry = answering
                    if meter is not None:
                        meter.model = entry.id
            stream = await entry.backend.open(request)
        except BaseException as exc:
            if meter is not None:
                meter.model = meter.model or request.model
                await end_meter(meter, exc)
            raise
        if voice is not None:
            locale = voice.locale
            stream.wrap(lambda deltas: speak(deltas, locale))
        return Generation(
            stream=stream, model=entry.id, n=request.n or 1,
            request_id=meter.request_id if meter is not None else random_id(),
            started=started, meter=meter, metrics=self.metrics, legacy=bool(request.functions),
        )

    async def complete(
        self, request: ChatCompletionRequest, *, meter: Meter | None = None
    ) -> ChatCompletion:
        """The whole reply: the same deltas a stream renders as chunks, accumulated."""
        generation = await self.open(request, meter=meter)
        async with generation:
            acc = Accumulator.of_deltas(
                id=f"chatcmpl-{generation.request_id}", created=generation.created,
                model=generation.model, n=generation.n, legacy=generation.legacy,
            )
            async for delta in generation:
                acc.add_delta(delta)
        return acc.result()

    @staticmethod
    async def chunks(
        generation: AsyncIterator[Delta] | Generation,
        *,
        model: str,
        n: int,
        chunk_id: str,
        created: int,
        legacy: bool,
        include_usage: bool,
    ) -> AsyncGenerator[ChatCompletionChunk | bytes, None]:
        """The deltas as ``chat.completion.chunk``s (a chunk of text alone comes as its
        JSON, already encoded: ``StreamChunks.text``). With ``legacy`` (the request used
        ``functions``), calls go out as ``function_call``. This only renders: closing
        the generation is its owner's business."""
        chunks = StreamChunks(id=chunk_id, created=created, model=model)
        chunk, choice = chunks.chunk, chunks.choice
        yield chunk(
            [choice(i, construct(ChoiceDelta, role="assistant", content="")) for i in range(n)]
        )
        async for delta in generation:
            if delta.content and not (delta.logprobs or delta.tool_calls or delta.reasoning):
                yield chunks.text(delta.index, delta.content)  # most chunks: text only
            elif delta.content or delta.logprobs or delta.tool_calls or delta.reasoning:
                logprobs = (
                    construct(ChoiceLogprobs, content=list(delta.logprobs), refusal=None)
                    if delta.logprobs
                    else None
                )
                content = construct(ChoiceDelta, role=None, content=delta.content,
                                    reasoning_content=delta.reasoning or None)
                if delta.tool_calls:
                    _add_calls(content, delta.tool_calls, legacy)
                yield chunk([choice(delta.index, content, logprobs=logprobs)])
            elif delta.finish_reason is not None:
                empty = construct(ChoiceDelta, role=None, content=None)
                yield chunk([choice(delta.index, empty, finish_of(delta, legacy))])
            elif delta.usage is not None and include_usage:
                yield chunk([], usage_of(delta.usage))

    def stream_chunks(
        self, generation: Generation, *, include_usage: bool
    ) -> AsyncGenerator[ChatCompletionChunk | bytes, None]:
        """``chunks`` of an opened generation, named after it; with usage when the
        request asked (``include_usage``) or the server always sends it."""
        return self.chunks(
            generation, model=generation.model, n=generation.n,
            chunk_id=f"chatcmpl-{generation.request_id}", created=generation.created,
            legacy=generation.legacy, include_usage=include_usage or self.always_include_usage,
        )


def _every_model(model: str, aliases: tuple[str, ...]) -> bool:
    return True


def within_key_cap(request: ChatCompletionRequest, cap: int | None) -> ChatCompletionRequest:
    """The request under its key's ``max_tokens`` limit: a 400 that gives both numbers
    when it asks more, the limit itself when it asks nothing."""
    if cap is None:
        return request
    for name in ("max_completion_tokens", "max_tokens"):
        asked = getattr(request, name)
        if asked is not None and asked > cap:
            raise InvalidRequestError(
                f"'{name}' is {asked}, but this API key allows at most {cap} per request.",
                param=name, code="max_tokens_too_large")
    if request.max_completion_tokens is None and request.max_tokens is None:
        return request.model_copy(update={"max_tokens": cap})
    return request


def finish_of(delta: Delta, legacy: bool) -> str | None:
    """The finish reason a client sees: ``function_call`` for a legacy request's calls."""
    if legacy and delta.finish_reason == "tool_calls":
        return "function_call"
    return delta.finish_reason
