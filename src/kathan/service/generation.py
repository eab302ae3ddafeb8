"""``Generation``: one admitted request whose backend has answered, and the one owner of
everything it holds.

A generation owns the request's ``Meter`` (its limiter lease and its ledger row)
and the backend's ``DeltaStream`` (the upstream connection or engine job, and
through the router the deployment's in-flight place). Whoever receives it must
close it exactly once (``aclose()`` or ``async with``), whether or not the
deltas were read. Closing closes the stream, then ends the meter with how the
request ended:

- every delta read: ``succeeded``, with the usage the backend reported;
- a ``KathanError`` while reading (an upstream that broke, a timeout): ``failed``
  with its status and code;
- the reader stopped early or was cancelled (the client left): ``cancelled`` (499);
- the shutdown cut it (``service.drain``): ``failed`` with 503 ``shutting_down``;
- any other exception (a bug): ``failed`` (500, ``internal_error``).

However it ended, the row and the key's limits (TPM, quota) are charged the
tokens consumed: the backend's usage when it came, else what the stream counted
until it stopped (``DeltaStream.counted``).

Each delta is seen on its way for the request's metrics (time to first token,
time per output token, token counts), whichever shape the endpoint renders.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Self

from kathan.backends.base import Delta, DeltaStream, TokenUsage
from kathan.errors import ClientDisconnected, KathanError
from kathan.service.drain import shutdown_cut
from kathan.service.metering import Meter
from kathan.service.metrics import Metrics


async def end_meter(
    meter: Meter,
    exc: BaseException | None,
    *,
    ttft: float | None = None,
    usage: TokenUsage | None = None,
) -> None:
    """The ledger row of a request that ended, before or after it was opened, with ``exc``
    (None: the reader stopped before the end), charged ``usage``: what was consumed
    until then."""
    u = usage or TokenUsage(0, 0)
    p, c, k = u.prompt_tokens, u.completion_tokens, u.cached_tokens
    if not isinstance(exc, KathanError):
        # Stopped or cancelled because the shutdown cut the request, not by its client.
        exc = shutdown_cut() or exc
    if isinstance(exc, KathanError) and not isinstance(exc, ClientDisconnected):
        await meter.fail(exc, ttft=ttft, prompt_tokens=p, completion_tokens=c, cached_tokens=k)
    elif exc is None or isinstance(
        exc, ClientDisconnected | GeneratorExit | asyncio.CancelledError
    ):
        await meter.finish("cancelled", ttft=ttft, http_status=499,
                           error_code="client_disconnected",
                           prompt_tokens=p, completion_tokens=c, cached_tokens=k)
    else:
        await meter.finish("failed", ttft=ttft, http_status=500, error_code="internal_error",
                           prompt_tokens=p, completion_tokens=c, cached_tokens=k)


class Generation:
    """The deltas of one request (iterate it), and the owner of its meter and stream."""

    __slots__ = ("_closed", "_complete", "_error", "_metrics", "created", "finish_reason",
                 "first", "last", "legacy", "meter", "model", "n", "request_id", "started",
                 "stream", "usage")

    def __init__(
        self,
        *,
        stream: DeltaStream,
        model: str,
        n: int,
        request_id: str,
        started: float,
        meter: Meter | None,
        metrics: Metrics,
        legacy: bool = False,
    ) -> None:
        self.stream = stream
        self.model = model  # the model that answers (a voice variant, a resolved alias)
        self.n = n
        self.request_id = request_id
        self.started = started  # perf_counter() when the request began
        self.created = int(time.time())
        self.meter = meter
        self.legacy = legacy  # a chat request that used ``functions``
        self._metrics = metrics
        self.first: float | None = None
        self.last: float | None = None
        self.usage: TokenUsage | None = None
        self.finish_reason: str | None = None
        self._complete = False
        self._error: BaseException | None = None
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delta:
        try:
            delta = await self.stream.__anext__()
        except asyncio.CancelledError as exc:
            cut = shutdown_cut()
            if cut is None:
                self._error = exc
                raise
            # The shutdown's cancellation, not a client's: the request ends with its
            # error (a stream's ``error`` event, or the JSON 503), and goes on.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._error = cut
            raise cut from None
        except StopAsyncIteration:
            self._complete = True
            # Ended in full: the row is recorded (and journaled) now, before the caller
            # can send the answer's end (`[DONE]`), so a kill after a client was served
            # cannot lose it. The owner's later ``aclose`` finds nothing left to do.
            await self.aclose()
            raise
        except BaseException as exc:
            self._error = exc
            raise
        self._see(delta)
        return delta

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.started

    def _see(self, delta: Delta) -> None:
        if delta.content or delta.logprobs or delta.tool_calls or delta.reasoning:
            self.last = time.perf_counter()
            if self.first is None:
                self.first = self.last
        elif delta.finish_reason is not None:
            if delta.index == 0:
                self.finish_reason = delta.finish_reason
        elif delta.usage is not None:
            u = self.usage = delta.usage
            first, last = self.first, self.last
            per_choice = max(u.completion_tokens // self.n, 1)
            self._metrics.observe_completion(
                self.model,
                ttft=self.ttft,
                tpot=(
                    (last - first) / (per_choice - 1)
                    if first is not None and last is not None and per_choice > 1
                    else None
                ),
                prompt=u.prompt_tokens,
                completion=u.completion_tokens,
                cached=u.cached_tokens,
            )

    async def aclose(self) -> None:
        """Release everything, once: the stream (and what it holds), then the meter."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.stream.aclose()
        finally:
            if self.meter is not None:
                await self._end(self.meter)

    async def _end(self, meter: Meter) -> None:
        # The backend's usage when it came; otherwise what the stream counted so far,
        # so that a request cut short is charged what it consumed.
        usage = self.usage or self.stream.counted()
        if not self._complete or self._error is not None:
            await end_meter(meter, self._error, ttft=self.ttft, usage=usage)
            return
        finish_reason = self.finish_reason
        if self.legacy and finish_reason == "tool_calls":
            finish_reason = "function_call"
        await meter.finish(
            "succeeded",
            prompt_tokens=usage.prompt_tokens,
            cached_tokens=usage.cached_tokens,
            completion_tokens=usage.completion_tokens,
            ttft=self.ttft,
            finish_reason=finish_reason,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and self._error is None and not self._complete:
            self._error = exc  # the reader failed (or was cancelled) between deltas
        await self.aclose()
