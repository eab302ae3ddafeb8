"""Abort the work a request started when its client goes away.

Streaming responses get this from Starlette, which cancels the body iterator
on disconnect. A non-streaming handler is not cancelled by anyone, so it races
its work against the client's ``http.disconnect`` here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

from kathan.errors import ClientDisconnected

T = TypeVar("T")


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work`` in the caller's own task; if the client disconnects first
    (``receive``, the request's ASGI channel, says so), cancel it and raise
    ``ClientDisconnected``.

    The work runs inline (no task of its own: one fewer trip through the event
    loop per request); a watcher task cancels the caller's task when the client
    leaves, and only while the work is still running.
    """
    current = asyncio.current_task()
    assert current is not None
    running = True
    left = False

    def on_watcher_done(watcher: asyncio.Future[None]) -> None:
        nonlocal left
        # The callback may be called after the work ended (it was already scheduled):
        # then the caller is sending its answer, and must not be cancelled.
        if running and not watcher.cancelled():
            left = True
            current.cancel()

    watcher = asyncio.ensure_future(_disconnected(receive))
    watcher.add_done_callback(on_watcher_done)
    try:
        result = await work
    except asyncio.CancelledError:
        if left:
            current.uncancel()
            raise ClientDisconnected(
                "The client disconnected before the response was ready.") from None
        raise
    finally:
        running = False
        watcher.cancel()
    if left:
        current.uncancel()  # the work finished anyway, ignoring the cancellation
    return result
