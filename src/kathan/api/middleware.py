"""ASGI middleware: the shutdown's drain, the request body size limit, and counting the
generation routes' answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kathan.api import errors
from kathan.errors import PayloadTooLargeError, ShuttingDownError
from kathan.service.drain import Drain


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes | None:
    """The whole request body, or None when the client left before sending it.

    Raises ``PayloadTooLargeError`` (which closes the connection) for a body
    over ``max_bytes``, whether or not it declared its length.
    """
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > max_bytes:
                raise _too_large(max_bytes)
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body = message.get("body", b"")
        size += len(body)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(body)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request body exceeds the limit of {max_bytes} bytes.",
        headers={"Connection": "close"},
    )


class BodyLimitMiddleware:
    """Answers 413 for bodies over ``max_bytes``, whether or not they declare a length.

    The body is read here (it is small by construction) and replayed to the
    app; after the replay, ``receive`` passes through so disconnects are seen.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, self.max_bytes)
        except PayloadTooLargeError as exc:
            await errors.render(exc, scope["path"])(scope, receive, send)
            return
        if body is None:
            return  # the client left before sending its body
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RequestCounter:
    """Counts the answers of the generation routes by endpoint (the path after ``/v1/``)
    and status, for /metrics (``count(endpoint, status)``; ``"disconnected"`` when the
    client left before any answer)."""

    def __init__(
        self, app: ASGIApp, paths: frozenset[str], count: Callable[[str, str], None]
    ) -> None:
        self.app = app
        self.paths = paths
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        status = "disconnected"

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.count(scope["path"].removeprefix("/v1/"), status)


class DrainMiddleware:
    """The one owner of each request's place in the ``Drain``: taken when the request
    comes in (once the drain has begun, a 503 ``shutting_down`` instead, except on
    ``exempt`` paths such as ``/ready``), given back however it ends.

    A request the shutdown cut while nothing had been answered yet gets Kathan's
    JSON 503; one cut after its headers went out has ended its own body (a stream's
    ``error`` event and ``[DONE]``), or, when the cut found it waiting for a slow
    client, ends without more. Either way the cancellation stops here: it was the
    shutdown's, not the server's failure.
    """

    def __init__(self, app: ASGIApp, drain: Drain, exempt: frozenset[str]) -> None:
        self.app = app
        self.drain = drain
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        try:
            ticket = self.drain.enter()
        except ShuttingDownError as exc:
            await errors.render(exc, scope["path"])(scope, receive, send)
            return
        noted = errors.NotedSend(send)
        try:
            await self.app(scope, receive, noted)
        except asyncio.CancelledError:
            if ticket.cut is None:
                raise
            if ticket.task is not None:
                ticket.task.uncancel()
            if not noted.started:
                await errors.render(ticket.cut, scope["path"])(scope, receive, send)
        finally:
            self.drain.leave(ticket)
