"""One relay loop for every provider backend: an upstream's answer, read event by
event and turned into ``Delta``s by the provider's ``Translator``.

The relay owns the policy for a stream that goes wrong after the upstream's
success status. Each failure has one code, whatever the provider:

- ``upstream_stream_broken``: the connection failed or timed out;
- ``upstream_bad_response``: an event could not be read (not UTF-8, not a JSON
  object, a field of the wrong type);
- ``upstream_stream_error``: the upstream reported an error inside the stream;
- ``upstream_stream_incomplete``: the stream ended before the answer did.

Each is a 503 with ``Retry-After``, not retryable: the client may hold part of
the answer. ``relay`` reads the first event before it returns, so a failure
there is still answered with a status code and may be retried elsewhere: it is
retryable, and an error event becomes the error of the status it names
(``error_for_status``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

from pydantic_core import from_json

from kathan.backends.base import Delta, DeltaStream, TokenUsage
from kathan.backends.sse_client import Event, SSEParser
from kathan.backends.transport import Response
from kathan.backends.upstream import UpstreamError, UpstreamUnavailable, error_for_status

BROKEN = "upstream_stream_broken"
MALFORMED = "upstream_bad_response"
ERROR_EVENT = "upstream_stream_error"
INCOMPLETE = "upstream_stream_incomplete"

# What malformed upstream data raises in a translator that reads it as trusted JSON
# (pydantic-core's and UTF-8's errors are ValueErrors).
_MALFORMED = (ValueError, TypeError, LookupError, AttributeError)


class StreamFailure(UpstreamUnavailable):
    """A stream that failed after the upstream's success status (the module's policy)."""

    def __init__(self, message: str, *, code: str, retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable, retry_after=1, code=code)


class ErrorEvent(StreamFailure):
    """An error the upstream reported inside its stream: ``what`` it said, and the
    HTTP ``status`` it named, if any (used when the error comes first)."""

    def __init__(self, what: str, *, status: int | None = None) -> None:
        super().__init__(f"The upstream failed mid-stream: {what}", code=ERROR_EVENT)
        self.what = what
        self.status = status


def incomplete(message: str) -> StreamFailure:
    """What a translator's ``finish`` raises when the answer did not finish."""
    return StreamFailure(message, code=INCOMPLETE)


def json_object(data: str) -> dict[str, Any]:
    """An event's data as a JSON object; ``ValueError`` (not JSON) or ``TypeError`` (not
    an object) otherwise, which the relay reports as a malformed event."""
    value = from_json(data)
    if not isinstance(value, dict):
        raise TypeError("the event is not a JSON object")
    return value


class Translator(Protocol):
    """Turns one upstream answer into deltas, one event at a time.

    ``feed`` receives each event's name (None when unnamed) and its data as text,
    and parses it itself (``json_object``); it raises ``ErrorEvent`` for an error
    the upstream reports, and may let ``ValueError``, ``TypeError``,
    ``LookupError`` or ``AttributeError`` out for data it cannot read (the relay
    calls those malformed). Once ``done`` is true the upstream has said the answer
    is complete and no further event is read. ``finish`` is called once, when the
    events end or once ``done``: it returns the last deltas (usage, typically) and
    raises ``incomplete(...)`` when the answer did not finish. ``counted`` is what
    the answer consumed so far, from what the upstream said (its usage fields) or,
    lacking them, the pieces of output seen: what a request cut short is charged.
    """

    @property
    def done(self) -> bool: ...

    def feed(self, event: str | None, data: str) -> list[Delta]: ...

    def finish(self) -> list[Delta]: ...

    def counted(self) -> TokenUsage: ...


class Framing(Protocol):
    """How a body is cut into events (``SSEParser`` for event streams)."""

    def feed(self, chunk: bytes) -> list[Event]: ...

    def end(self) -> list[Event]: ...


class WholeBody:
    """A body that is one event: the whole of it, unnamed, once it has ended."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def feed(self, chunk: bytes) -> list[Event]:
        self._parts.append(chunk)
        return []

    def end(self) -> list[Event]:
        return [(None, b"".join(self._parts).decode("utf-8"))]


async def relay(
    response: Response, translator: Translator, framing: Framing | None = None
) -> DeltaStream:
    """The deltas of a success ``response`` (an event stream unless ``framing`` says
    otherwise), as a stream its receiver must close.

    The first event is read and translated before this returns: a failure there
    raises here, with a status code (see the module's policy). The response is
    released once read to its end (or once the translator is done: the transport
    drops the rest of the body and releases it when it ends, so the last delta does
    not wait for it) and closed otherwise, which tells the upstream to stop.
    """
    reader = _Relay(response, translator, framing or SSEParser())
    first = await reader.step(opening=True)  # closes the response when it raises
    stream = DeltaStream(reader.deltas(first), on_close=reader.close)
    stream.count_with(translator.counted)
    return stream


class _Relay:
    __slots__ = ("_chunks", "_ended", "_events", "_finished", "_framing", "_let_go",
                 "_response", "_translator")

    def __init__(self, response: Response, translator: Translator, framing: Framing) -> None:
        self._response = response
        self._translator = translator
        self._framing = framing
        self._chunks: AsyncIterator[bytes] = aiter(response.iter_any())
        self._events: deque[Event] = deque()
        self._ended = False  # the body's end was read
        self._finished = False  # the translator's finish ran
        self._let_go = False  # released, or its rest is read in the background

    async def deltas(self, first: list[Delta]) -> AsyncGenerator[Delta, None]:
        for delta in first:
            yield delta
        while not self._finished:
            for delta in await self.step(opening=False):
                yield delta

    def close(self) -> None:
        if not self._let_go:
            self._response.close()  # the upstream stops

    async def step(self, *, opening: bool) -> list[Delta]:
        """The deltas of the next event, or those of the end."""
        try:
            event = await self._next_event()
            if event is None:
                self._finished = True
                out = self._translator.finish()
                self._let_go = True
                self._response.release()
                return out
            out = self._translator.feed(*event)
            if self._translator.done:
                self._finished = True
                out = [*out, *self._translator.finish()]
                self._hand_off()
            return out
        except BaseException as exc:
            self._response.close()
            failure = _failure(exc, opening)
            if failure is exc:
                raise
            raise failure from exc

    async def _next_event(self) -> Event | None:
        events = self._events
        while not events:
            if self._ended:
                return None
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._ended = True
                events.extend(self._framing.end())
            else:
                events.extend(self._framing.feed(chunk))
        return events.popleft()

    def _hand_off(self) -> None:
        """The answer is complete: the connection goes back to the pool once the body's
        end (often a packet of its own) has come, without the last delta waiting for it."""
        self._let_go = True
        self._response.release_when_read()


def _failure(exc: BaseException, opening: bool) -> BaseException:
    """The error of the relay's policy for ``exc``; ``opening``: no output exists yet."""
    if isinstance(exc, ErrorEvent):
        return error_for_status(exc.status or 500, exc.what) if opening else exc
    if isinstance(exc, StreamFailure):
        return StreamFailure(exc.message, code=str(exc.code), retryable=True) if opening else exc
    if isinstance(exc, UpstreamError):
        return exc  # a translator's own answer (a blocked prompt)
    if isinstance(exc, TimeoutError | OSError):
        return StreamFailure(
            f"The upstream connection failed mid-stream: {type(exc).__name__}.",
            code=BROKEN, retryable=opening,
        )
    if isinstance(exc, _MALFORMED):
        return StreamFailure("The upstream sent a malformed event.", code=MALFORMED,
                             retryable=opening)
    return exc
