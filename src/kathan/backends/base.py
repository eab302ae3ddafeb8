"""The ``Backend`` seam and the ``Delta`` events every backend yields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from kathan.protocol.chat import ChatCompletionRequest, TokenLogprob


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


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

    A content delta carries ``content`` (and ``tool_calls`` pieces); the last delta of a choice carries
    ``finish_reason``; a request-level ``usage`` delta comes after all choices
    finished.
    """

    index: int = 0
    content: str | None = None
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True, slots=True)
class LoadStats:
    """A backend's live load, for /metrics."""

    queued: int
    running: int
    kv_cells_used: int
    n_ctx: int
    n_slots: int


class Backend(Protocol):
    """Something that can answer chat requests for the models it serves.

    ``open`` validates the request and raises a ``KathanError`` for anything
    it cannot honour *before* any output exists, so the HTTP layer can still
    answer with a status code. It returns the stream of deltas.

    >>> deltas = await backend.open(request)
    >>> async for delta in deltas:
    ...     ...
    """

    @property
    def ready(self) -> bool: ...

    async def open(self, request: ChatCompletionRequest) -> AsyncIterator[Delta]: ...

    def stats(self) -> LoadStats | None:
        """Live load, or None when the backend has none to report."""
        ...
