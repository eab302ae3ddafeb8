"""The embedding seam: what a model that serves ``/v1/embeddings`` offers, and the
local engine's implementation of it.

A ``ModelEntry`` whose ``embeddings`` is set serves the endpoint; the others
(the provider models: chat only) are refused with a 400 by ``EmbeddingService``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from kathan.engine.embed import EmbedderClosed
from kathan.engine.engine import LocalEngine
from kathan.engine.llama import DecodeError, LlamaLoadError
from kathan.errors import EngineError, ModelNotReadyError, ShuttingDownError

logger = logging.getLogger(__name__)


class EmbeddingModel(Protocol):
    """A model's embeddings. ``tokenize`` and ``embed`` raise ``KathanError`` (503 while
    the model loads); ``n_vocab`` and ``n_ctx`` are known once ``ready``."""

    @property
    def ready(self) -> bool: ...

    @property
    def n_vocab(self) -> int:
        """Token ids run from 0 to ``n_vocab - 1``."""
        ...

    @property
    def n_ctx(self) -> int:
        """The most tokens one input may have."""
        ...

    async def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's tokens, as the model embeds it."""
        ...

    async def embed(self, inputs: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """One unit-length (L2) row per input, in order; every input is non-empty,
        within the vocabulary and at most ``n_ctx`` tokens long."""
        ...


class LocalEmbeddings:
    """``EmbeddingModel`` over the embedded engine: mean pooling, L2-normalized."""

    def __init__(self, engine: LocalEngine, *, retry_after: int) -> None:
        self.engine = engine
        self._retry_after = retry_after

    @property
    def ready(self) -> bool:
        return self.engine.ready

    @property
    def n_vocab(self) -> int:
        return self.engine.model.info.n_vocab

    @property
    def n_ctx(self) -> int:
        return self.engine.n_ctx

    def _check_ready(self) -> None:
        if not self.engine.ready:
            raise ModelNotReadyError(
                "The model is still loading; try again shortly.", retry_after=self._retry_after)

    async def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        self._check_ready()
        engine = self.engine
        # Off the event loop: a request may carry megabytes of text.
        return await asyncio.to_thread(lambda: [engine.tokenize_text(t) for t in texts])

    async def embed(self, inputs: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        self._check_ready()
        try:
            return await self.engine.embed([list(tokens) for tokens in inputs])
        except EmbedderClosed as exc:
            raise ShuttingDownError("The server is stopping.",
                                    retry_after=self._retry_after) from exc
        except (LlamaLoadError, DecodeError) as exc:
            logger.exception("embedding failed")
            raise EngineError("The engine failed to compute the embeddings; the server "
                              "log has the cause.") from exc
