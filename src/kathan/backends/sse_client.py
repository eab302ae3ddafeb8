"""Reading a server-sent event stream from an upstream, as ``(event, data)`` pairs
(``kathan.backends.relay`` feeds it a response's bytes)."""

from __future__ import annotations

Event = tuple[str | None, str]


class SSEParser:
    """Turns the bytes of an event stream, however they were cut, into events.

    >>> parser = SSEParser()
    >>> parser.feed(b"event: ping\\ndata: a\\ndata: b\\n\\nda")
    [('ping', 'a\\nb')]
    >>> parser.feed(b"ta: c\\n\\n") + parser.end()
    [(None, 'c')]
    """

    def __init__(self) -> None:
        self._pending = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by ``chunk`` (lines are split here, in one pass per read)."""
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        events: list[Event] = []
        for raw in lines:
            self._line(raw.rstrip(b"\r").decode("utf-8"), events)
        return events

    def end(self) -> list[Event]:
        """What is left when the stream ends: a last line and event without their blank line."""
        events: list[Event] = []
        if self._pending:
            self._line(self._pending.rstrip(b"\r").decode("utf-8"), events)
            self._pending = b""
        if self._data:
            events.append((self._event, "\n".join(self._data)))
            self._event, self._data = None, []
        return events

    def _line(self, line: str, events: list[Event]) -> None:
        if not line:
            if self._data:
                events.append((self._event, "\n".join(self._data)))
            self._event, self._data = None, []
        elif line.startswith(":"):
            return  # a comment (keep-alive)
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                self._event = value
            elif name == "data":
                self._data.append(value)

