"""``DisconnectWatch`` and ``unless_disconnected``: the work of a request ends with its
client or its caller. No test waits on time: each waits for the event it is about."""

from __future__ import annotations

import asyncio

import pytest

from kathan.api.disconnect import DisconnectWatch, unless_disconnected
from kathan.errors import ClientDisconnected


class Channel:
    """An ASGI ``receive`` whose client leaves when ``leave()`` is called."""

    def __init__(self) -> None:
        self._gone = asyncio.Event()

    def leave(self) -> None:
        self._gone.set()

    async def leave_once(self, started: asyncio.Event) -> None:
        """Leave as soon as the work has started."""
        await started.wait()
        self.leave()

    async def __call__(self) -> dict[str, object]:
        await self._gone.wait()
        return {"type": "http.disconnect"}


async def slow_work(cancelled: asyncio.Event, started: asyncio.Event | None = None) -> int:
    """Work that never ends by itself; it says when it started and when it was cancelled."""
    if started is not None:
        started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        cancelled.set()
        raise
    return 1


async def test_the_works_result_comes_back_and_the_watcher_stops() -> None:
    async def work() -> int:
        await asyncio.sleep(0)
        return 7

    before = len(asyncio.all_tasks())
    assert await unless_disconnected(Channel(), work()) == 7
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before


async def test_a_client_that_leaves_cancels_the_work() -> None:
    channel = Channel()
    cancelled, started = asyncio.Event(), asyncio.Event()
    leaving = asyncio.create_task(channel.leave_once(started))
    with pytest.raises(ClientDisconnected):
        await unless_disconnected(channel, slow_work(cancelled, started))
    assert cancelled.is_set()
    await leaving


async def test_cancelling_the_caller_cancels_the_work_and_is_not_a_disconnect() -> None:
    cancelled, started = asyncio.Event(), asyncio.Event()
    caller = asyncio.create_task(unless_disconnected(Channel(), slow_work(cancelled, started)))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0)
    assert cancelled.is_set()


async def test_the_works_own_error_comes_through() -> None:
    async def work() -> int:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await unless_disconnected(Channel(), work())


async def test_a_client_that_leaves_just_after_the_work_ended_cancels_nothing() -> None:
    # The watcher finishes in the same loop pass as the work: its callback is already
    # scheduled when the caller goes on to send the answer, and must not cancel it.
    channel = Channel()

    async def work() -> int:
        channel.leave()
        await asyncio.sleep(0)
        return 3

    async def caller() -> int:
        value = await unless_disconnected(channel, work())
        for _ in range(5):  # sending the answer: turns of the loop, where a stray cancel lands
            await asyncio.sleep(0)
        return value

    task = asyncio.create_task(caller())
    assert await task == 3
    assert task.cancelling() == 0


async def test_a_quiet_watch_takes_the_disconnect_back_and_says_so() -> None:
    # The streamed response's use: the client left, the stream stops, nothing is raised.
    channel = Channel()
    cancelled, started = asyncio.Event(), asyncio.Event()
    leaving = asyncio.create_task(channel.leave_once(started))
    with DisconnectWatch(channel, quiet=True) as watch:
        await slow_work(cancelled, started)
    assert watch.left and cancelled.is_set()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await leaving


async def test_a_watch_whose_client_stays_leaves_no_task_behind() -> None:
    before = len(asyncio.all_tasks())
    with DisconnectWatch(Channel()) as watch:
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not watch.left
    assert len(asyncio.all_tasks()) == before

