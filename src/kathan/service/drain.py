"""``Drain``: a stop that lets running requests finish, then ends the rest cleanly.

On the first SIGTERM (or SIGINT) the server begins to drain (``stop``):

- ``/ready`` answers 503 and every new request gets a 503 ``shutting_down`` with
  ``Retry-After``, while the socket still accepts connections, so that a load
  balancer sees the replica leave instead of finding its port closed;
- the requests already running get ``grace`` seconds to finish;
- those still running after it are *cut*: their task is cancelled, and the
  cancellation becomes a ``ShuttingDownError`` where it lands. A stream ends with
  an ``error`` event and ``[DONE]``, a request not answered yet gets Kathan's JSON
  503, and the ledger row says ``shutting_down`` with the tokens delivered so far.

Only then does the server close its socket and run the app's shutdown (which
writes the last ledger rows). A second signal stops at once.

Each request holds a ``Ticket`` from ``enter`` to ``leave`` (the drain middleware
is its one owner); the ticket is also the request's context variable
(``current``), which is how the code a cut lands in knows that the cancellation
it sees is the shutdown's and not a client's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar, Token
from typing import Any

from kathan.errors import ShuttingDownError

logger = logging.getLogger(__name__)


class Ticket:
    """One running request: its task, and the error it ends with once the shutdown
    cut it (None until then)."""

    __slots__ = ("cut", "task", "token")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.cut: ShuttingDownError | None = None
        self.token: Token[Ticket | None] | None = None


current: ContextVar[Ticket | None] = ContextVar("kathan_request_ticket", default=None)


def shutdown_cut() -> ShuttingDownError | None:
    """The error of the running request once the shutdown cut it (a cancellation seen
    then is the shutdown's, not a client's); None when it was not cut."""
    ticket = current.get()
    return None if ticket is None else ticket.cut


class Drain:
    """The running requests, and the stop that waits ``grace`` seconds for them, then
    cuts the rest and waits at most ``settle`` seconds for them to end."""

    def __init__(self, *, grace: float, retry_after: int, settle: float = 5.0) -> None:
        self.grace = grace
        self.retry_after = retry_after
        self.settle = settle
        self.draining = False
        self._running: set[Ticket] = set()
        self._idle: asyncio.Event | None = None

    @property
    def running(self) -> int:
        return len(self._running)

    def enter(self) -> Ticket:
        """A ticket for the request running in the current task; ``ShuttingDownError``
        once the drain has begun."""
        if self.draining:
            raise self.refusal()
        ticket = Ticket(asyncio.current_task())
        self._running.add(ticket)
        ticket.token = current.set(ticket)
        return ticket

    def leave(self, ticket: Ticket) -> None:
        if ticket.token is not None:
            current.reset(ticket.token)
            ticket.token = None
        self._running.discard(ticket)
        if not self._running and self._idle is not None:
            self._idle.set()

    def refusal(self) -> ShuttingDownError:
        return ShuttingDownError(
            "Kathan is shutting down and takes no new requests; retry on another "
            "replica, or here once it is back.", retry_after=self.retry_after)

    def cut_error(self) -> ShuttingDownError:
        """What a request cut by the shutdown ends with."""
        return ShuttingDownError(
            f"Kathan shut down before this request finished: it was still running "
            f"{self.grace:g} s after the shutdown began (shutdown_grace_seconds).",
            retry_after=self.retry_after)

    async def stop(self) -> None:
        """Refuse new requests, give the running ones ``grace`` seconds, cut the rest."""
        self.draining = True
        began = time.monotonic()
        if not self._running:
            logger.warning("shutting down: no request in flight")
            return
        logger.warning("shutting down: %d requests in flight, waiting up to %g s for them "
                       "(shutdown_grace_seconds)", len(self._running), self.grace)
        if await self._wait_idle(self.grace):
            logger.warning("shutting down: every request finished in %.1f s",
                           time.monotonic() - began)
            return
        cut = list(self._running)
        logger.warning("shutting down: cutting %d requests still running after %g s",
                       len(cut), self.grace)
        for ticket in cut:
            ticket.cut = self.cut_error()
            if ticket.task is not None:
                ticket.task.cancel()
        if await self._wait_idle(self.settle):
            logger.warning("shutting down: drained in %.1f s, %d requests cut",
                           time.monotonic() - began, len(cut))
        else:
            logger.warning("shutting down: %d cut requests did not end within %g s",
                           len(self._running), self.settle)

    async def _wait_idle(self, seconds: float) -> bool:
        if not self._running:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        finally:
            self._idle = None
        return True
