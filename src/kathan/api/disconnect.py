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
    """Await ``work``; if the client disconnects first (``receive``, the request's ASGI
    channel, says so), cancel it and raise ``ClientDisconnected``."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    watcher.add_done_callback(lambda w: None if w.cancelled() else task.cancel())
    try:
        return await task  # cancelling the caller cancels the work too
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            raise ClientDisconnected(
                "The client disconnected before the response was ready.") from None
        raise
    finally:
        watcher.cancel()
