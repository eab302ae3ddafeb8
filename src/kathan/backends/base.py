"""The ``Backend`` seam, the ``Delta`` events every backend yields, and the
``DeltaStream`` that carries them and owns what they hold."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from kathan.protocol.chat import ChatCompletionRequest, TokenLogprob


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    # Of completion_tokens, those the model spent reasoning (where the backend knows).
    reasoning_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of tool call number ``index`` within one choice.

    A call's first piece carries ``id`` and ``name``; the pieces after it carry
    fragments of the arguments' JSON text, in order.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Delta:
    """One step of a response.

    A content delta carries ``content`` (and ``tool_calls`` pieces); a reasoning
    delta carries ``reasoning``, the model's thinking before its answer (never
    part of ``content``), and ``signature`` where the backend signs it (an
    Anthropic thinking block's, which a client must send back with the block);
    the last delta of a choice carries ``finish_reason``; a request-level
    ``usage`` delta comes after all choices finished.
    """

    index: int = 0
    content: str | None = None
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    tool_calls: tuple[ToolCallDelta, ...] = ()
    # With finish_reason "stop": the stop string that ended the choice, where the backend
    # knows it (Anthropic's stop_sequence).
    stop: str | None = None
    reasoning: str | None = None
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class LoadStats:
    """A backend's live load, for /metrics."""

    queued: int
    running: int
    kv_cells_used: int
    n_ctx: int
    n_slots: int


Stage = Callable[[AsyncGenerator[Delta, None]], AsyncGenerator[Delta, None]]
Closer = Callable[[], Awaitable[None] | None]
Watcher = Callable[[BaseException], None]
Counter = Callable[[], TokenUsage]


class DeltaStream:
    """The deltas of one request, and the owner of what producing them holds (an
    upstream response, an engine job, a deployment's in-flight place).

    Whoever receives a stream must close it, once, with ``aclose()`` or
    ``async with``, whether or not it iterated, and however iteration ended.
    Closing closes every stage (outermost first), then runs the ``on_close``
    callbacks (last added first). A callback runs exactly once even when a stage
    or another callback fails on the way; the first failure is raised after all ran.

    Stages (``wrap``) transform the deltas; they must not hold resources of their
    own in a ``finally``: a stage that never started never runs one. Resources are
    handed to ``on_close``, which runs regardless. ``on_error`` callbacks see an
    error that ends the iteration (the router counts a broken stream against its
    deployment), without a stage of their own.

    ``counted()`` is what the stream has consumed so far, as its backend counts it
    (``count_with``): prompt tokens once the prompt was processed, completion
    tokens as they were produced. The usage delta at the end is exact; this is
    what a request that ends before it (the client left, the upstream broke) is
    charged.

    Usage, as a caller sees it: open, then ``async with stream:`` and ``async for
    delta in stream:`` inside it; a backend builds one from an async generator of
    its deltas and registers ``stream.on_close(response.close)``.
    """

    __slots__ = ("_closed", "_closers", "_counter", "_layers", "_outer", "_watchers")

    def __init__(self, deltas: AsyncGenerator[Delta, None], *, on_close: Closer | None = None):
        self._layers: list[AsyncGenerator[Delta, None]] = [deltas]
        self._outer = deltas
        self._closers: list[Closer] = [] if on_close is None else [on_close]
        self._watchers: list[Watcher] = []
        self._counter: Counter | None = None
        self._closed = False

    def wrap(self, stage: Stage) -> Self:
        """Put ``stage`` over the deltas (it receives the current outermost iterator)."""
        self._outer = stage(self._outer)
        self._layers.append(self._outer)
        return self

    def on_close(self, closer: Closer) -> None:
        """Run ``closer`` (sync or async) when the stream is closed (not after it was)."""
        if self._closed:
            raise RuntimeError("the stream is closed already")
        self._closers.append(closer)

    def count_with(self, counter: Counter) -> None:
        """``counter()`` tells what the stream has consumed so far (the backend's count)."""
        self._counter = counter

    def counted(self) -> TokenUsage:
        return self._counter() if self._counter is not None else TokenUsage(0, 0)

    def on_error(self, watcher: Watcher) -> None:
        """Call ``watcher(exc)`` when reading the deltas raises ``exc`` (not at their end)."""
        self._watchers.append(watcher)

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delta:
        try:
            return await self._outer.__anext__()
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            for watcher in self._watchers:
                watcher(exc)
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        failure: BaseException | None = None
        for layer in reversed(self._layers):
            try:
                await layer.aclose()
            except BaseException as exc:  # noqa: BLE001 - raised below, after the others ran
                failure = failure or exc
        for closer in reversed(self._closers):
            try:
                result = closer()
                if result is not None:  # an async closer's awaitable
                    await result
            except BaseException as exc:  # noqa: BLE001 - raised below, after the others ran
                failure = failure or exc
        self._closers.clear()
        if failure is not None:
            raise failure

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Backend(Protocol):
    """Something that can answer chat requests for the models it serves.

    ``check`` raises a ``KathanError`` for anything in the request this backend
    cannot honour, without I/O; ``open`` checks too, sends the request and
    raises for every failure *before* any output exists, so the HTTP layer can
    still answer with a status code. It returns a ``DeltaStream`` that the
    caller owns and must close, whether or not it reads it.
    """

    @property
    def ready(self) -> bool: ...

    def check(self, request: ChatCompletionRequest) -> None:
        """Raise for what this backend cannot honour (a 400 naming the field)."""
        ...

    async def open(self, request: ChatCompletionRequest) -> DeltaStream: ...

    async def probe(self) -> bool:
        """Whether the backend answers right now (for a deployment whose circuit is open)."""
        ...

    def stats(self) -> LoadStats | None:
        """Live load, or None when the backend has none to report."""
        ...


def serves_raw_prompts(backend: Backend) -> bool:
    """Whether ``backend`` answers legacy completions (``/v1/completions``: a request
    whose ``_completion`` is set) rather than only chats: a backend that does says so
    with a true ``serves_raw_prompts`` attribute."""
    return bool(getattr(backend, "serves_raw_prompts", False))
