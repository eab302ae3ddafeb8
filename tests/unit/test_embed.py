"""``Embedder`` (engine/embed.py) over a fake pooling context: how inputs are packed
into decodes, the order and length of the rows, one batch at a time, closing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from kathan.engine.embed import Embedder, EmbedderClosed, pack


class FakePooling:
    """A context whose pooled vector for a sequence is (its length, its first token, 1);
    it notes each decode's sequences and whether two ever ran at once."""

    n_ctx = 100
    n_seq_max = 3
    dimensions = 3

    def __init__(self, delay: float = 0.0) -> None:
        self.decodes: list[list[list[int]]] = []
        self.delay = delay
        self.running = 0
        self.overlapped = False
        self.closed = False
        self._guard = threading.Lock()

    def embed(self, sequences: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        assert not self.closed
        assert sum(len(s) for s in sequences) <= self.n_ctx
        assert len(sequences) <= self.n_seq_max
        with self._guard:
            self.running += 1
            self.overlapped |= self.running > 1
        time.sleep(self.delay)
        self.decodes.append([list(s) for s in sequences])
        with self._guard:
            self.running -= 1
        return np.array([[len(s), s[0], 1.0] for s in sequences], dtype=np.float32)

    def close(self) -> None:
        self.closed = True


class Opener:
    def __init__(self, context: FakePooling) -> None:
        self.context = context
        self.opened = 0

    def __call__(self) -> FakePooling:
        self.opened += 1
        return self.context


def test_pack_fills_each_decode_up_to_the_budget_and_the_sequence_limit() -> None:
    assert pack([5, 5, 5, 5], budget=10, most=8) == [range(2), range(2, 4)]
    assert pack([1] * 7, budget=100, most=3) == [range(3), range(3, 6), range(6, 7)]
    # Longer than the budget: alone, never split.
    assert pack([2, 30, 2], budget=10, most=8) == [range(1), range(1, 2), range(2, 3)]
    assert pack([], budget=10, most=8) == []


async def test_inputs_are_packed_into_few_decodes_and_come_back_in_order() -> None:
    context = FakePooling()
    opener = Opener(context)
    embedder = Embedder(opener, budget=10)
    inputs = [[1, 2], [3, 4, 5], [6], [7] * 20, [8, 9], [10]]
    rows = await embedder.embed(inputs)
    assert context.decodes == [
        [[1, 2], [3, 4, 5], [6]],  # 3 sequences: the context's most
        [[7] * 20],  # past the budget: alone
        [[8, 9], [10]],
    ]
    assert rows.shape == (6, 3) and rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0)
    # Row i is input i's vector (length, first token, 1), normalized.
    for row, tokens in zip(rows, inputs, strict=True):
        expected = np.array([len(tokens), tokens[0], 1.0])
        assert np.allclose(row, expected / np.linalg.norm(expected))
    await embedder.embed([[1]])
    assert opener.opened == 1  # the context is made once, at the first request
    embedder.close()


async def test_requests_run_one_at_a_time_off_the_event_loop() -> None:
    context = FakePooling(delay=0.05)
    embedder = Embedder(Opener(context), budget=10)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.create_task(tick())
    results = await asyncio.gather(*(embedder.embed([[i + 1]]) for i in range(4)))
    ticker.cancel()
    assert len(context.decodes) == 4 and not context.overlapped
    for i, rows in enumerate(results):  # each caller got its own input's vector
        expected = np.array([1.0, i + 1, 1.0])
        assert np.allclose(rows[0], expected / np.linalg.norm(expected))
    assert ticks >= 10  # the loop kept running while the decodes slept
    embedder.close()


async def test_closing_frees_the_context_and_refuses_what_comes_after() -> None:
    context = FakePooling()
    embedder = Embedder(Opener(context), budget=10)
    await embedder.embed([[1]])
    embedder.close()
    assert context.closed
    with pytest.raises(EmbedderClosed):
        await embedder.embed([[1]])


def test_closing_an_embedder_never_used_opens_nothing() -> None:
    opener = Opener(FakePooling())
    Embedder(opener, budget=10).close()
    assert opener.opened == 0
