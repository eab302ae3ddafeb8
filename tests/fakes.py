"""Fakes at the seams, for testing logic without a model."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import numpy as np
import numpy.typing as npt

from kathan.backends.base import Delta, DeltaStream, LoadStats, TokenUsage
from kathan.errors import KathanError, ModelNotReadyError
from kathan.protocol.chat import ChatCompletionRequest


class FakeBackend:
    """Replays scripted deltas; can be not-ready or fail mid-stream."""

    def __init__(
        self,
        pieces: Sequence[str | Delta] = ("Hello", "!"),
        *,
        ready: bool = True,
        fail_after: int | None = None,
        error: KathanError | None = None,
    ) -> None:
        self.pieces = list(pieces)
        self._ready = ready
        self.fail_after = fail_after
        self.error = error
        self.requests: list[ChatCompletionRequest] = []
        self.opened = 0  # streams handed out
        self.closed = 0  # streams closed (each exactly once)

    @property
    def ready(self) -> bool:
        return self._ready

    def stats(self) -> LoadStats | None:
        return None

    def check(self, request: ChatCompletionRequest) -> None:
        return None

    # Replays its pieces for a legacy completion's raw prompt too (/v1/completions).
    serves_raw_prompts = True

    def count_tokens(self, request: ChatCompletionRequest) -> int:
        """One token per word of the messages' text (the local engine counts its own)."""
        return sum(len(str(m.content or "").split()) for m in request.messages)

    async def probe(self) -> bool:
        return self._ready

    @property
    def open_streams(self) -> int:
        return self.opened - self.closed

    async def open(self, request: ChatCompletionRequest) -> DeltaStream:
        if not self._ready:
            raise ModelNotReadyError("loading", retry_after=3)
        if self.error is not None and self.fail_after is None:
            raise self.error
        self.requests.append(request)
        self.opened += 1
        return DeltaStream(self._deltas(), on_close=self._closed)

    def _closed(self) -> None:
        self.closed += 1

    async def _deltas(self) -> AsyncGenerator[Delta, None]:
        for i, piece in enumerate(self.pieces):
            if self.fail_after is not None and i == self.fail_after:
                assert self.error is not None
                raise self.error
            yield piece if isinstance(piece, Delta) else Delta(content=piece)
        yield Delta(finish_reason="stop")
        yield Delta(usage=TokenUsage(prompt_tokens=4, completion_tokens=len(self.pieces)))


class FakeEmbeddings:
    """``EmbeddingModel`` without a model: one token per character (its code point, so
    ids past ``n_vocab`` are possible only when given), and a vector per input that
    counts its tokens into ``dimensions`` buckets, normalized. ``calls`` keeps the
    inputs of each ``embed`` call."""

    def __init__(self, *, n_vocab: int = 1000, n_ctx: int = 64, dimensions: int = 8,
                 ready: bool = True) -> None:
        self.n_vocab = n_vocab
        self.n_ctx = n_ctx
        self.dimensions = dimensions
        self.ready = ready
        self.calls: list[list[list[int]]] = []

    def _check_ready(self) -> None:
        if not self.ready:
            raise ModelNotReadyError("loading", retry_after=3)

    async def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        self._check_ready()
        return [[ord(c) % self.n_vocab for c in text] for text in texts]

    async def embed(self, inputs: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        self._check_ready()
        self.calls.append([list(tokens) for tokens in inputs])
        rows = np.zeros((len(inputs), self.dimensions), dtype=np.float32)
        for row, tokens in zip(rows, inputs, strict=True):
            for token in tokens:
                row[token % self.dimensions] += 1.0
        norms: npt.NDArray[np.float32] = np.linalg.norm(rows, axis=1, keepdims=True)
        return rows / norms
