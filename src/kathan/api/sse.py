"""Server-sent events: framing, and the response that sends them.

Once the response headers have gone out, an error can no longer change the
status code, so it becomes an ``error`` event (``errors.sse_error``, the one
rendering of errors in a stream) followed by ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Protocol

from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from kathan.api.disconnect import DisconnectWatch
from kathan.api.errors import sse_error

DONE = b"data: [DONE]\n\n"


def encode(data: str, event: str | None = None) -> bytes:
    """Frame one event. ``data`` may span lines; each line gets its own ``data:``."""
    lines = [f"event: {event}"] if event else []
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


async def encode_stream(
    items: AsyncIterator[BaseModel | bytes],
) -> AsyncGenerator[bytes, None]:
    """Frame every item as JSON (an item of ``bytes`` is JSON already), then ``[DONE]``;
    an error becomes an ``error`` event. Framing only: what ``items`` hold is their
    owner's to release."""
    try:
        async for item in items:
            # Serialized JSON has no raw newline, so it is one ``data:`` line.
            data = item if isinstance(item, bytes) else item.__pydantic_serializer__.to_json(item)
            yield b"data: " + data + b"\n\n"
    except Exception as exc:  # noqa: BLE001 - every error becomes the error event (bugs logged there)
        yield sse_error(exc)
    yield DONE


class Owner(Protocol):
    """What a streamed response releases when it ends, however it ends."""

    async def aclose(self) -> None: ...


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response that sends, in one write, every event that is
    ready when the socket is free; the last ones go with the end of the body.

    The request's task runs the event iterator, as with Starlette's own
    response (a client that leaves cancels it, and with it the upstream or
    engine work); a writer task sends what has accumulated. Nothing waits to be
    batched: an event goes out as soon as the writer is free, so a local
    model's tokens still leave one by one, while an upstream's burst of events
    that arrived in one read (OpenAI-compatible servers often send a dozen at
    once) leaves in one write instead of a dozen, each a trip through the ASGI
    stack and a system call. At most ``max_pending`` events wait for a slow
    client before the iterator waits too.
    """

    max_pending = 64

    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        *,
        owner: Owner | None = None,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(content, media_type="text/event-stream", background=background,
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                  **(headers or {})})
        self._events = content
        self._owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette's own __call__ runs the stream in an anyio task group beside a
        # disconnect listener (ASGI 2.3); its cancel scopes cost more than the rest of
        # a proxied stream's framing. Here the request's task runs the stream, and a
        # client that leaves cancels it (and with it the backend's work) the same way.
        try:
            with DisconnectWatch(receive, quiet=True):
                await self.stream_response(send)
        finally:
            # Released however the response ended: sent in full, the client gone before
            # or after the headers (a server may raise on the first send), cancelled.
            try:
                await self._events.aclose()
            finally:
                if self._owner is not None:
                    await self._owner.aclose()
        if self.background is not None:
            await self.background()

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        ready: list[bytes] = []
        wake = asyncio.Event()
        room = asyncio.Event()
        room.set()
        finished = False

        async def write() -> None:
            try:
                while not finished:
                    if not ready:
                        await wake.wait()
                        wake.clear()
                        continue
                    body = b"".join(ready)
                    ready.clear()
                    room.set()
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            finally:
                room.set()  # an iterator waiting for room must see that the writer stopped

        writer = asyncio.create_task(write())
        try:
            async for event in self._events:
                if writer.done():
                    # The writer failed (the client is gone): stop the work, raise its error.
                    await self._events.aclose()
                    break
                ready.append(event.encode(self.charset) if isinstance(event, str) else bytes(event))
                wake.set()
                if len(ready) >= self.max_pending:
                    room.clear()
                    await room.wait()
            finished = True
            wake.set()
            await writer  # it ends after the send it is in, if any
        finally:
            writer.cancel()
        # What is left (often the whole reply of an upstream's burst) goes with the end of
        # the body, in one write.
        await send({"type": "http.response.body", "body": b"".join(ready), "more_body": False})
