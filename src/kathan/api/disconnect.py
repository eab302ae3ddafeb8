"""Abort the work a request started when its client goes away.

Uvicorn speaks ASGI 2.3: a ``send`` after the client left does nothing, and
nobody cancels a handler whose client is gone. ``DisconnectWatch`` does: a
small task waits on the request's ``receive`` for ``http.disconnect`` and
cancels the request's own task while the watched work runs. The work stays in
the request's task (no task of its own, no task group), so a request pays one
small task for this, not a trip through the event loop per step of its work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import TracebackType
from typing import Self, TypeVar

from starlette.types import Receive

from kathan.errors import ClientDisconnected

T = TypeVar("T")


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class DisconnectWatch:
    """Within ``with DisconnectWatch(receive) as watch:``, a client that leaves cancels
    the current task; on the way out the cancellation is taken back (``watch.left``
    says it happened) and the ``CancelledError`` it raised becomes ``ClientDisconnected``
    (or, with ``quiet=True``, nothing). Cancelling the task from elsewhere is not a
    disconnect: that ``CancelledError`` goes through as it is.
    """

    __slots__ = ("_quiet", "_receive", "_running", "_task", "_watcher", "left")

    def __init__(self, receive: Receive, *, quiet: bool = False) -> None:
        self._receive = receive
        self._quiet = quiet
        self._running = False
        self.left = False

    def __enter__(self) -> Self:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._running = True
        self._watcher = asyncio.ensure_future(_disconnected(self._receive))
        self._watcher.add_done_callback(self._on_watcher_done)
        return self

    def _on_watcher_done(self, watcher: asyncio.Future[None]) -> None:
        # The callback may run after the block ended (it was already scheduled): the
        # caller is then sending its answer, and must not be cancelled.
        if self._running and not watcher.cancelled():
            self.left = True
            self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._running = False
        self._watcher.cancel()
        if not self.left:
            return False
        self._task.uncancel()
        if exc_type is asyncio.CancelledError:
            if self._quiet:
                return True
            raise ClientDisconnected(
                "The client disconnected before the response was ready.") from None
        return False  # the work ended anyway (or failed), ignoring the cancellation


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work`` in the caller's own task; if the client disconnects first
    (``receive``, the request's ASGI channel, says so), cancel it and raise
    ``ClientDisconnected``."""
    with DisconnectWatch(receive):
        result = await work
    return result
