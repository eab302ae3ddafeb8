"""``ChatService``: one chat request from resolved model to chunks or a completion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from kathan.backends.base import Delta, TokenUsage, ToolCallDelta
from kathan.errors import ClientDisconnected, KathanError
from kathan.ids import random_id
from kathan.protocol.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceDelta,
    ChoiceLogprobs,
    ChunkChoice,
    FunctionCallDelta,
    ToolCallChunk,
    Usage,
    construct,
)
from kathan.routing.registry import ModelRegistry
from kathan.service.accumulate import accumulate
from kathan.service.metering import Meter
from kathan.service.metrics import Metrics
from kathan.service.voice import speak, voice_request
from kathan.voice.profile import voice_of


def _usage(delta: Delta) -> Usage:
    assert delta.usage is not None
    u = delta.usage
    return construct(
        Usage,
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.prompt_tokens + u.completion_tokens,
        prompt_tokens_details={"cached_tokens": u.cached_tokens},
    )


async def _end_meter(meter: Meter, exc: BaseException, *, ttft: float | None = None) -> None:
    """The ledger row of a request that ended with ``exc``."""
    if isinstance(exc, KathanError) and not isinstance(exc, ClientDisconnected):
        await meter.fail(exc)
    elif isinstance(exc, ClientDisconnected | GeneratorExit | asyncio.CancelledError):
        await meter.finish("cancelled", ttft=ttft, http_status=499, error_code="client_disconnected")
    else:
        await meter.finish("failed", ttft=ttft, http_status=500, error_code="internal_error")


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
    """Turns a request into the one stream of chunks, or its accumulation.

    >>> chunks = await service.stream(request)   # raises KathanError before any output
    >>> completion = await service.complete(request)
    """

    def __init__(self, registry: ModelRegistry, metrics: Metrics) -> None:
        self.registry = registry
        self.metrics = metrics

    async def stream(
        self,
        request: ChatCompletionRequest,
        *,
        include_usage: bool | None = None,
        meter: Meter | None = None,
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Validate, open the backend's deltas and return the chunk stream.

        Raises ``KathanError`` before any chunk exists. ``include_usage`` defaults
        to the request's ``stream_options.include_usage``. With a ``meter``, the
        caller's allow-list and limits are checked before the backend is asked,
        and the request's ledger row is written however it ends.
        """
        started = time.perf_counter()
        voice = voice_of(request.finetune, request.language, request.gender, request.accent)
        try:
            entry = self.registry.resolve(request.model)
            if meter is not None:
                await meter.admit(entry.id, entry.aliases)
            if voice is not None:
                request = voice_request(request, voice)
                if voice.finetune and entry.voice_model is not None:
                    # The response's `model` names the variant that answered.
                    entry = self.registry.resolve(entry.voice_model)
                    if meter is not None:
                        meter.model = entry.id
            deltas = await entry.backend.open(request)
            if voice is not None:
                deltas = speak(deltas, voice.locale)
        except BaseException as exc:
            if meter is not None:
                meter.model = meter.model or request.model
                await _end_meter(meter, exc)
            raise
        if include_usage is None:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
        legacy = bool(request.functions)
        request_id = meter.request_id if meter is not None else random_id()
        return self._chunks(
            entry.id, deltas, include_usage, request.n or 1, started, legacy, meter, request_id
        )

    async def complete(
        self, request: ChatCompletionRequest, *, meter: Meter | None = None
    ) -> ChatCompletion:
        chunks = await self.stream(request, include_usage=True, meter=meter)
        async with aclosing(chunks):  # type: ignore[type-var]
            return await accumulate(chunks)

    async def _chunks(
        self,
        model: str,
        deltas: AsyncIterator[Delta],
        include_usage: bool,
        n: int,
        started: float,
        legacy: bool = False,
        meter: Meter | None = None,
        request_id: str = "",
    ) -> AsyncIterator[ChatCompletionChunk]:
        """``legacy``: the request used ``functions``, so calls go out as ``function_call``."""
        chunk_id = f"chatcmpl-{request_id or random_id()}"
        usage: TokenUsage | None = None
        finish_reason: str | None = None
        created = int(time.time())

        def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
            return construct(ChatCompletionChunk, 
                id=chunk_id,
                object="chat.completion.chunk",
                created=created,
                model=model,
                choices=choices,
                usage=usage,
                system_fingerprint=None,
            )

        def choice(
            index: int,
            delta: ChoiceDelta,
            finish: str | None = None,
            logprobs: ChoiceLogprobs | None = None,
        ) -> ChunkChoice:
            return construct(ChunkChoice, 
                index=index, delta=delta, finish_reason=finish, logprobs=logprobs
            )

        yield chunk(
            [choice(i, construct(ChoiceDelta, role="assistant", content="")) for i in range(n)]
        )
        first = last = None
        try:
            async for delta in deltas:
                if delta.content or delta.logprobs or delta.tool_calls:
                    last = time.perf_counter()
                    if first is None:
                        first = last
                    logprobs = (
                        construct(ChoiceLogprobs, content=list(delta.logprobs), refusal=None)
                        if delta.logprobs
                        else None
                    )
                    content = construct(ChoiceDelta, role=None, content=delta.content)
                    if delta.tool_calls:
                        _add_calls(content, delta.tool_calls, legacy)
                    yield chunk([choice(delta.index, content, logprobs=logprobs)])
                elif delta.finish_reason is not None:
                    empty = construct(ChoiceDelta, role=None, content=None)
                    finish = delta.finish_reason
                    if delta.index == 0:
                        finish_reason = finish
                    if legacy and finish == "tool_calls":
                        finish = "function_call"
                    yield chunk([choice(delta.index, empty, finish)])
                elif delta.usage is not None:
                    u = usage = delta.usage
                    per_choice = max(u.completion_tokens // n, 1)
                    self.metrics.observe_completion(
                        model,
                        ttft=None if first is None else first - started,
                        tpot=(
                            (last - first) / (per_choice - 1)
                            if first is not None and last is not None and per_choice > 1
                            else None
                        ),
                        prompt=u.prompt_tokens,
                        completion=u.completion_tokens,
                        cached=u.cached_tokens,
                    )
                    if include_usage:
                        yield chunk([], _usage(delta))
        except BaseException as exc:
            if meter is not None:
                await _end_meter(meter, exc, ttft=None if first is None else first - started)
            raise
        finally:
            aclose = getattr(deltas, "aclose", None)
            if aclose is not None:
                await aclose()
        if meter is not None:
            if finish_reason == "function_call" or (legacy and finish_reason == "tool_calls"):
                finish_reason = "function_call"
            await meter.finish(
                "succeeded",
                prompt_tokens=usage.prompt_tokens if usage else 0,
                cached_tokens=usage.cached_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                ttft=None if first is None else first - started,
                finish_reason=finish_reason,
            )
