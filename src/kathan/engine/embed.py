"""``Embedder``: unit-length embeddings from the loaded model, computed off the event loop.

The vectors come from a ``PoolingContext`` (``llama.py``): a context of its own
over the model the generation runner uses, created on the first request, so the
runner's context, slots and prefix caches are never touched. Requests run one
at a time on the embedder's own worker thread. The inputs of a request are
packed into as few ``llama_decode`` calls as fit (``pack``): distinct sequence
ids in one batch, the memory cleared before each. A batch's sequences attend
only to themselves, but llama.cpp still computes their scores against the
other sequences' cells before masking them, so the tokens per decode are kept
to ``budget`` (a longer input goes alone), which bounds that waste.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Pooling(Protocol):
    """What the embedder needs of a context (``llama.PoolingContext`` has this shape)."""

    @property
    def n_ctx(self) -> int: ...
    @property
    def n_seq_max(self) -> int: ...
    @property
    def dimensions(self) -> int: ...

    def embed(self, sequences: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]: ...
    def close(self) -> None: ...


class EmbedderClosed(Exception):
    """The engine is stopping: the request's remaining inputs were not embedded."""


def pack(lengths: Sequence[int], *, budget: int, most: int) -> list[range]:
    """Consecutive inputs grouped into decodes of at most ``budget`` tokens and ``most``
    sequences each; an input longer than ``budget`` makes a group of its own.

    >>> pack([3, 4, 2, 9, 1], budget=8, most=4)
    [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    >>> pack([1, 1, 1], budget=8, most=2)
    [range(0, 2), range(2, 3)]
    """
    groups: list[range] = []
    start, tokens = 0, 0
    for i, n in enumerate(lengths):
        if i > start and (tokens + n > budget or i - start >= most):
            groups.append(range(start, i))
            start, tokens = i, 0
        tokens += n
    if start < len(lengths):
        groups.append(range(start, len(lengths)))
    return groups


def normalized(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Each row scaled to unit L2 norm (a row of zeros stays zeros).

    >>> normalized(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    scaled: npt.NDArray[np.float32] = (rows / np.maximum(norms, np.finfo(np.float32).tiny)
                                       ).astype(np.float32)
    return scaled


class Embedder:
    """``await embed(sequences)``: one unit-length row per token sequence, in order.

    ``open_context`` makes the pooling context (on the worker thread, at the first
    request); ``budget`` is the most tokens one decode packs from several inputs.
    Every sequence must fit the context (``n_ctx`` tokens): the caller checks.
    ``close`` waits for the request running, stops it between two decodes, and
    frees the context.
    """

    def __init__(self, open_context: Callable[[], Pooling], *, budget: int) -> None:
        self._open_context = open_context
        self._budget = budget
        self._context: Pooling | None = None
        self._lock = threading.Lock()  # the context: one user at a time, or close
        self._closing = threading.Event()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kathan-embed")

    def open(self) -> Pooling:
        """Make the pooling context now rather than at the first request (blocking), and
        return it: an embedding model's context is made while it loads."""
        with self._lock:
            if self._context is None:
                self._context = self._open_context()
            return self._context

    async def embed(self, sequences: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        if self._closing.is_set():
            raise EmbedderClosed("the engine is stopping")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self._embed, sequences)

    def _embed(self, sequences: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        with self._lock:
            if self._closing.is_set():
                raise EmbedderClosed("the engine is stopping")
            if self._context is None:
                self._context = self._open_context()
            context = self._context
            out = np.empty((len(sequences), context.dimensions), dtype=np.float32)
            groups = pack([len(s) for s in sequences], budget=max(self._budget, 1),
                          most=context.n_seq_max)
            for group in groups:
                if self._closing.is_set():
                    raise EmbedderClosed("the engine is stopping")
                out[group.start:group.stop] = context.embed(
                    [sequences[i] for i in group])
            return normalized(out)

    def close(self) -> None:
        self._closing.set()
        self._worker.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            if self._context is not None:
                self._context.close()
                self._context = None
