"""The seam between provider backends and the HTTP client that carries their requests.

A provider backend knows its upstream's URL, headers and wire format; how the
bytes travel is a ``Transport``'s. ``HTTPPool`` (``backends/http1.py``) is the
one Kathan ships; tests and other clients plug in behind the same two Protocols.

Contract of every transport:

- ``endpoint(url, headers)`` prepares a target once (parsing, encoding);
  ``Endpoint.post`` sends one request to it and returns once the status line
  and headers are in. Before that it raises ``TimeoutError`` or one of the
  errors below (all ``OSError``), which say whether the upstream may have the
  request:

  - ``UpstreamConnectError``: nothing was sent (the connection could not be
    made, or the transport is closed). Sending the request again, here or
    elsewhere, cannot make it run twice. A connect that timed out is an
    ``UpstreamConnectTimeout``, which is also a ``TimeoutError``.
  - ``UpstreamMaybeReceivedError``: the request was written and the connection
    broke before any byte of an answer. The upstream may have read it and may
    be running it; sending it again may run (and bill) it twice.
  - ``UpstreamConnectionError`` itself: the answer began and then broke off,
    or is not HTTP. The upstream has the request.
  - ``TimeoutError`` (other than a connect timeout): the upstream was silent
    for longer than ``read_timeout``; it may have the request.

- A request that the server may have read is never sent again by the transport:
  a POST is not idempotent, and a resent one can be billed twice (RFC 9112,
  section 9.3.1). A transport lowers the odds of that error instead, by not
  reusing a kept-alive connection that its peer may already have closed.
- The ``Response`` is released (``release``: read to its end, the connection
  may be reused) or closed (``close``: the connection is dropped, which is how
  a client that left cancels the upstream's work). Both may be called more
  than once; the first one counts. Reading a body that breaks off raises
  ``UpstreamConnectionError`` or ``TimeoutError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol


class UpstreamConnectionError(ConnectionError):
    """The connection failed, or the response broke off or could not be parsed."""


class UpstreamConnectError(UpstreamConnectionError):
    """No connection to send on: nothing was sent, so the request may go again."""


class UpstreamConnectTimeout(UpstreamConnectError, TimeoutError):
    """Connecting took longer than ``connect_timeout``; nothing was sent."""


class UpstreamMaybeReceivedError(UpstreamConnectionError):
    """The request was sent and the connection broke before any byte of an answer.

    The upstream may have received it and may act on it: sending it again may run it
    twice, so only a caller that knows the request is idempotent should.
    """


class Response(Protocol):
    """An upstream's answer whose body is read as it arrives."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive response headers."""
        ...

    @property
    def at_eof(self) -> bool:
        """The whole body has been read."""
        ...

    async def read(self) -> bytes: ...

    async def text(self, errors: str = "replace") -> str: ...

    def iter_any(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (decoded from its content coding)."""
        ...

    def release(self) -> None: ...

    def release_when_read(self) -> None:
        """The reader is done though the body may not be: the rest is dropped as it
        comes, and the response released once it ended (closed if it breaks)."""
        ...

    def close(self) -> None: ...


class Endpoint(Protocol):
    """One upstream URL with the headers every request to it carries."""

    async def post(
        self, body: bytes, *, connect_timeout: float, read_timeout: float
    ) -> Response: ...


class Transport(Protocol):
    def endpoint(self, url: str, headers: Mapping[str, str]) -> Endpoint: ...

    async def close(self) -> None: ...
