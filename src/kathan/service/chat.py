"""``ChatService``: one chat request from resolved model to chunks or a completion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from kathan.backends.base import Delta, TokenUsage, ToolCallDelta
from kathan.errors import ClientDisconnected, KathanError
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
from kathan.service.metering import Meter
from kathan.service.metrics import Metrics
from kathan.service.voice import speak, voice_request
from kathan.voice.profile import voice_of


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
    ) -> AsyncIterator[ChatCompletionChunk | bytes]:
        """Validate, open the backend's deltas and return the chunk stream. A chunk of
        text alone comes as its JSON, already encoded (``StreamChunks.text``).

        Raises ``KathanError`` before any chunk exists. ``include_usage`` defaults
        to the request's ``stream_options.include_usage``. With a ``meter``, the
        caller's allow-list and limits are checked before the backend is asked,
        and the request's ledger row is written however it ends.
        """
        opened = await self._open(request, meter)
        if include_usage is None:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return self._chunks(opened, include_usage)

    async def complete(
        self, request: ChatCompletionRequest, *, meter: Meter | None = None
    ) -> ChatCompletion:
        """The whole reply: the same deltas a stream renders as chunks, accumulated."""
        opened = await self._open(request, meter)
        acc = Accumulator.of_deltas(
            id=opened.chunk_id, created=opened.created, model=opened.model, n=opened.n,
            legacy=opened.legacy,
        )
        async with aclosing(_Progress(self.metrics, opened).track()) as deltas:
            async for delta in deltas:
                acc.add_delta(delta)
        return acc.result()

    async def _open(self, request: ChatCompletionRequest, meter: Meter | None) -> _Opened:
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
        request_id = meter.request_id if meter is not None else random_id()
        return _Opened(
            model=entry.id, deltas=deltas, n=request.n or 1, started=started,
            legacy=bool(request.functions), meter=meter, chunk_id=f"chatcmpl-{request_id}",
            created=int(time.time()),
        )

    async def _chunks(
        self, opened: _Opened, include_usage: bool
    ) -> AsyncIterator[ChatCompletionChunk | bytes]:
        """The deltas as chunks. With ``opened.legacy`` (the request used ``functions``),
        calls go out as ``function_call``."""
        legacy = opened.legacy
        chunks = StreamChunks(id=opened.chunk_id, created=opened.created, model=opened.model)
        chunk, choice = chunks.chunk, chunks.choice
        yield chunk(
            [choice(i, construct(ChoiceDelta, role="assistant", content=""))
             for i in range(opened.n)]
        )
        # Closed here when the client leaves (this generator's own close), not later by
        # the collector: the ledger row and the backend's stream end with the request.
        async with aclosing(_Progress(self.metrics, opened).track()) as deltas:
            async for delta in deltas:
                if delta.content and not (delta.logprobs or delta.tool_calls):
                    yield chunks.text(delta.index, delta.content)  # most chunks: text only
                elif delta.content or delta.logprobs or delta.tool_calls:
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
                    yield chunk([choice(delta.index, empty, finish_of(delta, legacy))])
                elif delta.usage is not None and include_usage:
                    yield chunk([], usage_of(delta.usage))


@dataclass(slots=True)
class _Opened:
    """A request whose backend has answered: its deltas and what its replies are named."""

    model: str
    deltas: AsyncIterator[Delta]
    n: int
    started: float
    legacy: bool  # the request used ``functions``: calls go out as ``function_call``
    meter: Meter | None
    chunk_id: str
    created: int


class _Progress:
    """What a request's deltas tell its metrics and its ledger row, whichever way the
    reply is rendered (chunks or one completion)."""

    __slots__ = ("_metrics", "_opened", "finish_reason", "first", "last", "usage")

    def __init__(self, metrics: Metrics, opened: _Opened) -> None:
        self._metrics = metrics
        self._opened = opened
        self.first: float | None = None
        self.last: float | None = None
        self.usage: TokenUsage | None = None
        self.finish_reason: str | None = None

    async def track(self) -> AsyncGenerator[Delta, None]:
        """The request's deltas, each seen on its way; however the iteration ends (the
        deltas run out, an error, a client that left) the ledger row is written once
        and the backend's stream is closed."""
        deltas = self._opened.deltas
        try:
            async for delta in deltas:
                self.see(delta)
                yield delta
        except BaseException as exc:
            await self.failed(exc)
            raise
        finally:
            await _close(deltas)
        await self.finished()

    def see(self, delta: Delta) -> None:
        if delta.content or delta.logprobs or delta.tool_calls:
            self.last = time.perf_counter()
            if self.first is None:
                self.first = self.last
        elif delta.finish_reason is not None:
            if delta.index == 0:
                self.finish_reason = delta.finish_reason
        elif delta.usage is not None:
            u = self.usage = delta.usage
            first, last = self.first, self.last
            per_choice = max(u.completion_tokens // self._opened.n, 1)
            self._metrics.observe_completion(
                self._opened.model,
                ttft=None if first is None else first - self._opened.started,
                tpot=(
                    (last - first) / (per_choice - 1)
                    if first is not None and last is not None and per_choice > 1
                    else None
                ),
                prompt=u.prompt_tokens,
                completion=u.completion_tokens,
                cached=u.cached_tokens,
            )

    def _ttft(self) -> float | None:
        return None if self.first is None else self.first - self._opened.started

    async def failed(self, exc: BaseException) -> None:
        if self._opened.meter is not None:
            await _end_meter(self._opened.meter, exc, ttft=self._ttft())

    async def finished(self) -> None:
        meter = self._opened.meter
        if meter is None:
            return
        finish_reason = self.finish_reason
        if finish_reason == "function_call" or (
            self._opened.legacy and finish_reason == "tool_calls"
        ):
            finish_reason = "function_call"
        usage = self.usage
        await meter.finish(
            "succeeded",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            cached_tokens=usage.cached_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            ttft=self._ttft(),
            finish_reason=finish_reason,
        )


def finish_of(delta: Delta, legacy: bool) -> str | None:
    """The finish reason a client sees: ``function_call`` for a legacy request's calls."""
    if legacy and delta.finish_reason == "tool_calls":
        return "function_call"
    return delta.finish_reason


async def _close(deltas: AsyncIterator[Delta]) -> None:
    aclose = getattr(deltas, "aclose", None)
    if aclose is not None:
        await aclose()
