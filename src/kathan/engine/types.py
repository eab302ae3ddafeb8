"""Values that cross the engine's boundary."""

from __future__ import annotations

from dataclasses import dataclass

from kathan.engine.sampling import SamplingParams


class Halt:
    """Ends chosen choices of a running request at their next step, from any thread.

    >>> halt = Halt()
    >>> halt.end(0)  # choice 0 finishes with "stop" at its next token
    >>> 0 in halt, 1 in halt
    (True, False)
    """

    def __init__(self) -> None:
        self._indices: set[int] = set()

    def end(self, index: int) -> None:
        self._indices.add(index)

    def __contains__(self, index: int) -> bool:
        return index in self._indices


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A tokenized prompt and how to continue it, ``n`` times.

    ``logprobs``: None for none, else how many alternatives to report per
    token (0 reports only the chosen token's log probability).
    """

    prompt: list[int]
    sampling: SamplingParams
    max_tokens: int
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: int | None = None
    halt: Halt | None = None
    # Deliver every token's id (``GenerationEvent.tokens``), special tokens and the
    # end-of-generation token included: for a format parsed by token (harmony).
    tokens: bool = False


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    bytes: bytes
    logprob: float


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    bytes: bytes
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationEvent:
    """New text for choice ``index``. Its last event has ``finish_reason``. Every event
    carries the choice's counts so far (tokens generated, the prompt's length and the
    part of it reused from the cache).
    """

    text: str
    index: int = 0
    finish_reason: str | None = None
    completion_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    stop: str | None = None  # the stop string that ended the choice (finish "stop")
    tokens: tuple[int, ...] = ()  # the ids this event adds, when the request asked


@dataclass(frozen=True, slots=True)
class EngineStats:
    queued: int
    running: int
    kv_cells_used: int
    n_ctx: int
    n_slots: int


class EngineOverloaded(Exception):
    """The engine cannot take the request now (queue full or queue timeout).

    ``retry_after``: seconds until it likely could, at the rate sequences finished
    lately (None before any finished)."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestTooLarge(Exception):
    """The request can never fit in the engine's KV cache."""
