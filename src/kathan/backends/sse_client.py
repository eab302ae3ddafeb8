"""Reading a server-sent event stream from an upstream, as ``(event, data)`` pairs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str | None, str]]:
    """Yield each event's name (None when unnamed) and its data lines joined by newlines.

    >>> async for event, data in sse_events(response):
    ...     if data == "[DONE]":
    ...         break
    """
    event: str | None = None
    data: list[str] = []
    async for line in _lines(response):
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith(":"):
            continue  # a comment (keep-alive)
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """Lines of any length (aiohttp's own line reader stops at 64 KiB)."""
    pending = b""
    async for chunk in response.content.iter_any():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8")
