"""A lean HTTP/1.1 client for the hot upstream path: keep-alive connections, llhttp.

The ``openai`` backend relays every request of a gateway, so what its client
costs is added to every request. aiohttp's client builds a request object,
a cookie filter, a timer context, a payload writer and a response object per
request: about 220 us of CPU each on this project's bench host, against 60 us
for a request written on a kept-alive socket and parsed by ``httptools``
(llhttp, the parser uvicorn uses). This module is that, and no more:

- one request at a time per connection, connections kept alive and reused
  (most recently used first), dropped after ``keepalive`` idle seconds or
  when the server closes them;
- a body given as bytes, sent with ``Content-Length``; responses with
  ``Content-Length``, chunked or read-to-close bodies, gzip or deflate
  content coding; http and https (the system's CA store);
- a connect timeout, and a read timeout that bounds the silence between two
  pieces of a response (streams may last long, so there is no total limit);
- a request that fails on a reused connection before any byte of its
  answer came back is sent once more on a new connection (the server had
  closed the idle connection as the request was sent);
- a body read as it arrives (``iter_any``) holds back the socket when the
  reader is slow, and ``close`` drops the connection: that is how a client
  who left cancels the upstream's work.

Redirects, proxies, cookies and HTTP/2 are out of scope: the other provider
backends, probes and image fetches keep using aiohttp.

>>> pool = HTTPPool()
>>> target = Target.parse("http://127.0.0.1:9100/v1/chat/completions")
>>> response = await pool.request(target, b"POST", {"Content-Type": "application/json"}, body)
>>> response.status, await response.read()
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Self, cast

import httptools
from multidict import CIMultiDict
from yarl import URL

_HIGH_WATER = 256 * 1024  # buffered body bytes at which the socket stops being read
_LOW_WATER = 64 * 1024


class UpstreamConnectionError(ConnectionError):
    """The connection failed, or the response broke off or could not be parsed."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go: the connection's address and the request line's path."""

    scheme: str
    host: str
    port: int
    path: bytes  # path and query, as sent in the request line
    host_header: bytes

    @classmethod
    def parse(cls, url: str) -> Target:
        u = URL(url)
        if u.scheme not in ("http", "https") or not u.raw_host:
            raise ValueError(f"not an http(s) URL: {url!r}")
        host = u.raw_host
        port = u.port or (443 if u.scheme == "https" else 80)
        shown = f"[{host}]" if ":" in host else host
        if u.explicit_port is not None:
            shown = f"{shown}:{u.explicit_port}"
        # yarl keeps the host in its ASCII (IDNA) form and the path percent-encoded.
        return cls(u.scheme, host, port, (u.raw_path_qs or "/").encode("ascii"),
                   shown.encode("ascii"))

    @property
    def key(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


class HTTPPool:
    """Kept-alive connections per (scheme, host, port), shared by the backends that use it.

    ``close()`` closes them all; requests made after it fail.
    """

    def __init__(
        self,
        *,
        keepalive: float = 60.0,
        max_idle_per_host: int = 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._keepalive = keepalive
        self._max_idle = max_idle_per_host
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._ssl = ssl_context  # for https; the system's CA store when None
        self._closed = False

    async def request(
        self,
        target: Target,
        method: bytes,
        headers: Mapping[str, str] | bytes,
        body: bytes,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
    ) -> Response:
        """Send one request and return once the response's status and headers are in.

        ``headers`` may be given already encoded (``encode_headers``), which is how a
        backend that sends the same ones every time avoids encoding them per request.
        Raises ``UpstreamConnectionError`` or ``TimeoutError`` before a response exists.
        """
        if self._closed:
            raise UpstreamConnectionError("the upstream client is closed")
        head = b"".join((
            method, b" ", target.path, b" HTTP/1.1\r\nHost: ", target.host_header,
            b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n",
            headers if isinstance(headers, bytes) else encode_headers(headers),
            b"\r\n",
        ))
        conn = self._take(target)
        if conn is not None:
            try:
                return await conn.exchange(head + body, read_timeout)
            except UpstreamConnectionError:
                if conn.answered:
                    raise
                # Most likely the server closed the idle connection as the request went
                # out, so it goes once more on a new connection (at most once; a server
                # that read it and then died may see it twice, as with the router's
                # retries of connection errors).
        conn = await self._connect(target, connect_timeout)
        return await conn.exchange(head + body, read_timeout)

    def _take(self, target: Target) -> _Connection | None:
        idle = self._idle.get(target.key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.reusable and now - conn.idle_since < self._keepalive:
                return conn
            conn.close()
        return None

    async def _connect(self, target: Target, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        context = None
        if target.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(timeout):
                transport, conn = await loop.create_connection(
                    lambda: _Connection(self, target.key), target.host, target.port,
                    ssl=context, server_hostname=target.host if context else None,
                )
        except TimeoutError:
            raise TimeoutError(f"connecting to {target.host}:{target.port} took over "
                               f"{timeout:g} s") from None
        except OSError as exc:
            raise UpstreamConnectionError(
                f"cannot connect to {target.host}:{target.port}: {exc}") from exc
        if conn.transport is None:  # uvloop may call connection_made a little later
            conn.transport = transport
        self._all.add(conn)
        return conn

    def _give_back(self, conn: _Connection) -> None:
        if self._closed or not conn.reusable:
            conn.close()
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    @property
    def idle_connections(self) -> int:
        return sum(len(v) for v in self._idle.values())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """Header lines as sent (``Host`` and ``Content-Length`` are the pool's own)."""
    lines = []
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} has a line break")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


class _Connection(asyncio.Protocol):
    """One socket; at most one request on it at a time."""

    def __init__(self, pool: HTTPPool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.reusable = False  # idle and fit for the next request
        self.answered = False  # a byte of the current request's answer came back
        self.idle_since = 0.0
        self._headers: list[tuple[str, str]] = []
        self._head: asyncio.Future[Response] | None = None
        self._paused = False
        self._last_data = 0.0
        self._read_timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.answered = True
        self._last_data = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamConnectionError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamConnectionError(f"the upstream's answer is not HTTP: {exc}"))

    def eof_received(self) -> bool | None:
        response = self.response
        if response is not None and not response.complete and response._until_close:
            self._finish()  # a body without length ends with the connection
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._stop_timer()
        self.pool._forget(self)
        response = self.response
        if (exc is None and response is not None and response._until_close
                and not response.complete):
            self._finish()  # a clean close ends a body without length
        else:
            self._fail(UpstreamConnectionError(
                "the upstream closed the connection" + (f": {exc}" if exc else "")))

    def pause_writing(self) -> None:  # requests are small: the kernel buffers them
        pass

    def resume_writing(self) -> None:
        pass

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer: the real one follows
            self._headers = []
            return
        headers: CIMultiDict[str] = CIMultiDict(self._headers)
        self._headers = []
        response = Response(self, status, headers)
        self.response = response
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None:
            response._feed(body)

    def on_message_complete(self) -> None:
        if self.response is None:
            return  # the end of an interim answer
        self._finish()

    # the request's side

    async def exchange(self, data: bytes, read_timeout: float) -> Response:
        assert self.transport is not None
        if self.closed:
            raise UpstreamConnectionError("the upstream closed the connection")
        self.reusable = False
        self.answered = False
        self.response = None
        self.parser = httptools.HttpResponseParser(self)
        head = self._head = asyncio.get_running_loop().create_future()
        self._read_timeout = read_timeout
        self._last_data = time.monotonic()
        self._stop_timer()  # the last request's, if any, with its own limit
        self._arm_timer()
        self.transport.write(data)
        try:
            response: Response = await head
        except BaseException:
            self.close()  # given up (cancelled, or failed): the upstream must see it
            raise
        return response

    def _finish(self) -> None:
        response = self.response
        assert response is not None
        self._stop_timer()
        keep = (not self.closed and not response._until_close
                and self.parser.should_keep_alive())
        response._end()
        if keep:
            self.reusable = True  # given back to the pool when the response is released
        elif not self.closed:
            self.close()

    def _fail(self, error: Exception) -> None:
        self._stop_timer()
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(error)
        response = self.response
        if response is not None and not response.complete:
            response._break(error)
        if not self.closed:
            self.close()

    def close(self) -> None:
        self.reusable = False
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def release(self) -> None:
        self.response = None
        self.pool._give_back(self)

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()
            self._stop_timer()  # a reader that is slow is not a silent upstream

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self._last_data = time.monotonic()
            self.transport.resume_reading()
            if self.response is not None and not self.response.complete:
                self._arm_timer()

    # the read timeout: one timer that looks at when data last came

    def _arm_timer(self) -> None:
        if self._timer is None and self._read_timeout > 0:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + self._read_timeout, self._on_timer)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        silent = time.monotonic() - self._last_data
        if silent >= self._read_timeout:
            self._fail(TimeoutError(
                f"the upstream sent nothing for {self._read_timeout:g} s"))
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + self._read_timeout - silent, self._on_timer)


class Response:
    """An upstream's answer: ``status``, ``headers``, and a body read whole (``read``,
    ``text``) or as it arrives (``iter_any``). Once the body is read to its end the
    connection goes back to the pool; ``close`` drops it instead (an abandoned answer)."""

    __slots__ = ("_chunks", "_conn", "_decoder", "_error", "_refused", "_size",
                 "_until_close", "_waiter", "complete", "headers", "status")

    def __init__(self, conn: _Connection, status: int, headers: CIMultiDict[str]) -> None:
        self._conn: _Connection | None = conn
        self.status = status
        self.headers = headers
        self.complete = False
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self._refused: Exception | None = None  # a body that cannot be decoded at all
        coding = headers.get("Content-Encoding", "identity").strip().lower()
        self._decoder = None
        if coding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(47 if coding != "deflate" else 15)
        elif coding not in ("identity", ""):
            self._refused = UpstreamConnectionError(
                f"the upstream used a content coding Kathan cannot read: {coding}")
        # No length and not chunked: the body ends when the server closes (HTTP/1.0 style).
        self._until_close = (
            "Content-Length" not in headers
            and "chunked" not in headers.get("Transfer-Encoding", "").lower()
            and status not in (204, 304)
        )

    @property
    def reason(self) -> str:
        """The status's standard phrase (the one on the wire is informative only)."""
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return ""

    @property
    def at_eof(self) -> bool:
        """The whole body came and has been read."""
        return self.complete and not self._chunks

    async def read(self) -> bytes:
        """The whole body; the connection is then back in the pool."""
        parts = [piece async for piece in self.iter_any()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def text(self, errors: str = "replace") -> str:
        return (await self.read()).decode("utf-8", errors)

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive (``b""`` never); the connection goes back to
        the pool after the last one."""
        if self._refused is not None:
            self.close()
            raise self._refused
        while True:
            if self._error is not None and not self._chunks:
                self.close()
                raise self._error
            if self._chunks:
                piece = self._chunks.popleft()
                self._size -= len(piece)
                if self._size < _LOW_WATER and self._conn is not None:
                    self._conn.resume()
                yield piece
                continue
            if self.complete:
                self.release()
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            except BaseException:
                self.close()  # a reader that gives up mid-body: the upstream must see it
                raise
            finally:
                self._waiter = None

    def release(self) -> None:
        """Back to the pool if the body was read to its end, else the connection closes."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self.at_eof and conn.reusable:
            conn.release()
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection (the upstream sees the client leave)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # fed by the connection

    def _feed(self, data: bytes) -> None:
        if self._refused is not None:
            return
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._break(UpstreamConnectionError(f"the upstream's body is corrupt: {exc}"))
                return
            if not data:
                return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > _HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _end(self) -> None:
        if self._decoder is not None:
            rest = self._decoder.flush()
            if rest:
                self._chunks.append(rest)
        self.complete = True
        self._wake()

    def _break(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
