"""A lean HTTP/1.1 client for the hot upstream path: keep-alive connections, llhttp.

Every provider backend (openai, anthropic, gemini) sends through ``HTTPPool``,
behind the ``Transport`` seam of ``backends/transport.py``, so what this client
costs is added to every request a gateway relays. aiohttp's client builds a
request object, a cookie filter, a timer context, a payload writer and a
response object per request; this module writes the request on a kept-alive
socket and parses the answer with ``httptools`` (llhttp, the parser uvicorn
uses). ``python -m bench.http_client`` measures it against httpx and aiohttp.
It does this, and no more:

- one request at a time per connection, connections kept alive and reused
  (most recently used first);
- a body given as bytes, sent with ``Content-Length``; responses with
  ``Content-Length``, chunked or read-to-close bodies, gzip or deflate
  content coding (deflate zlib-wrapped or raw, told apart by its first bytes,
  as browsers and aiohttp do); http and https (the system's CA store);
- a connect timeout, and a read timeout that bounds the silence between two
  pieces of a response (streams may last long, so there is no total limit);
- a body read as it arrives (``iter_any``) holds back the socket when the
  reader is slow, and ``close`` drops the connection: that is how a client
  who left cancels the upstream's work.

No request is ever sent twice. A server may close a kept-alive connection just
as a request goes out on it, and then cannot say whether it read the request;
resending a POST then may run and bill it twice (RFC 9112, section 9.3.1, and
aiohttp retries only idempotent methods). So the pool makes that race rare
instead, and reports it when it happens:

- an idle connection is not reused when its peer has closed it or sent
  anything (an EOF the event loop has not handled yet is seen by polling the
  socket), when its transport is closing, or when it has been idle for
  ``keepalive`` seconds: 4 s by default, under the 5 s after which uvicorn
  (vLLM, llama-cpp-python, most Python servers) and Node close an idle
  connection, so that the server's close does not meet the request;
- no connection could be made: ``UpstreamConnectError`` (nothing was sent);
- the connection broke after the request was written and before any byte of
  an answer: ``UpstreamMaybeReceivedError`` (the upstream may have it).

To send, ``pool.endpoint(url, headers)`` gives an endpoint whose ``post(body,
connect_timeout=..., read_timeout=...)`` returns the ``Response`` once its
status line and headers are in; ``request(target, method, headers, body)`` is
the same for any method. Redirects, proxies, cookies and HTTP/2 are out of
scope: health probes and the images Kathan fetches itself use aiohttp.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol, Self, cast

import httptools
from multidict import CIMultiDict
from yarl import URL

from kathan.backends.transport import (
    UpstreamConnectError,
    UpstreamConnectionError,
    UpstreamConnectTimeout,
    UpstreamMaybeReceivedError,
)

if TYPE_CHECKING:
    from kathan.backends.transport import Transport

__all__ = [
    "KEEPALIVE",
    "HTTPPool",
    "PoolEndpoint",
    "Response",
    "Target",
    "UpstreamConnectError",
    "UpstreamConnectTimeout",
    "UpstreamConnectionError",
    "UpstreamMaybeReceivedError",
    "encode_headers",
]

_HIGH_WATER = 256 * 1024  # buffered body bytes at which the socket stops being read
_LOW_WATER = 64 * 1024
# Under the 5 s after which uvicorn and Node close an idle connection: past it, the
# server's close could cross a request on the wire (see the module's docstring).
KEEPALIVE = 4.0


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
        keepalive: float = KEEPALIVE,
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
        Before a response exists it raises ``TimeoutError`` or an
        ``UpstreamConnectionError``: ``UpstreamConnectError`` when nothing was sent,
        ``UpstreamMaybeReceivedError`` when the connection broke after the request was
        written and before any answer. The request is sent once, never again.
        """
        if self._closed:
            raise UpstreamConnectError("the upstream client is closed")
        head = b"".join((
            method, b" ", target.path, b" HTTP/1.1\r\nHost: ", target.host_header,
            b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n",
            headers if isinstance(headers, bytes) else encode_headers(headers),
            b"\r\n",
        ))
        conn = self._take(target)
        if conn is None:
            conn = await self._connect(target, connect_timeout)
        return await conn.exchange(head + body, read_timeout)

    def _take(self, target: Target) -> _Connection | None:
        """The most recently used idle connection that is fit to carry a request."""
        idle = self._idle.get(target.key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since < self._keepalive and conn.fit_for_reuse():
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
            raise UpstreamConnectTimeout(f"connecting to {target.host}:{target.port} took "
                                         f"over {timeout:g} s") from None
        except OSError as exc:
            raise UpstreamConnectError(
                f"cannot connect to {target.host}:{target.port}: {exc}") from exc
        if conn.transport is None:  # uvloop may call connection_made a little later
            conn.connection_made(transport)
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

    def endpoint(self, url: str, headers: Mapping[str, str]) -> PoolEndpoint:
        """``url`` and ``headers`` parsed and encoded once (the ``Transport`` seam)."""
        return PoolEndpoint(self, Target.parse(url), encode_headers(headers))

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


@dataclass(frozen=True, slots=True)
class PoolEndpoint:
    """One upstream URL and its headers, ready to be sent through ``pool``."""

    pool: HTTPPool
    target: Target
    headers: bytes

    async def post(self, body: bytes, *, connect_timeout: float, read_timeout: float) -> Response:
        return await self.pool.request(self.target, b"POST", self.headers, body,
                                       connect_timeout=connect_timeout,
                                       read_timeout=read_timeout)


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
        self.uses = 0  # requests written on this connection
        self.idle_since = 0.0
        self._fd = -1
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
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1

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
        self.reusable = False  # the peer is done sending: it closes, or will
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
            return
        why = f": {exc}" if exc else ""
        if self._head is not None and not self.answered:
            # Written and unanswered: whether the server read it cannot be known.
            kind = "kept-alive" if self.uses > 1 else "new"
            self._fail(UpstreamMaybeReceivedError(
                "the upstream closed the connection after the request was sent and before "
                f"any answer ({kind} connection{why}); it may have received the request, "
                "so it is not sent again"))
        else:
            self._fail(UpstreamConnectionError(f"the upstream closed the connection{why}"))

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

    def fit_for_reuse(self) -> bool:
        """Idle, open, and nothing waiting on its socket.

        An idle HTTP/1.1 connection has nothing to read, so bytes or an EOF on it mean
        the peer is closing it; polling sees them before the event loop gets to them.
        """
        if not self.reusable or self.transport is None or self.transport.is_closing():
            return False
        if self._fd < 0:
            return True  # a transport without a socket: nothing to poll
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return not poller.poll(0)

    async def exchange(self, data: bytes, read_timeout: float) -> Response:
        assert self.transport is not None
        if self.closed or self.transport.is_closing():
            raise UpstreamConnectError("the connection was closed before the request")
        self.uses += 1
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
        if keep:
            self.reusable = True  # given back to the pool when the response is released
        response._end()
        if not keep and not self.closed:
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

    __slots__ = ("_chunks", "_conn", "_decoder", "_discard", "_error", "_refused", "_size",
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
        self._discard = False  # the reader let go (release_when_read): drop what comes
        coding = headers.get("Content-Encoding", "identity").strip().lower()
        self._decoder: _Decoder | None = None
        if coding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._decoder = _Deflate()
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

    def release_when_read(self) -> None:
        """The reader has what it needs (an event stream's last event came): what is left
        of the body is dropped as it arrives, and the connection goes back to the pool
        once the body has ended, or closes if it breaks. No task: the connection's own
        callbacks do it, so the reader's answer does not wait for the body's end."""
        self._discard = True
        self._chunks.clear()
        self._size = 0
        if self._error is not None:
            self.close()
        elif self.complete:
            self.release()
        elif self._conn is not None:
            self._conn.resume()

    # fed by the connection

    def _feed(self, data: bytes) -> None:
        if self._refused is not None or self._discard:
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
            try:
                rest = self._decoder.flush()
            except zlib.error as exc:
                self._break(UpstreamConnectionError(f"the upstream's body is corrupt: {exc}"))
                return
            if rest and not self._discard:
                self._chunks.append(rest)
        self.complete = True
        if self._discard:
            # Called from the connection's parser: the release waits for it to return.
            asyncio.get_running_loop().call_soon(self.release)
            return
        self._wake()

    def _break(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        if self._discard:
            self.close()
            return
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Decoder(Protocol):
    def decompress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _Deflate:
    """``deflate`` as servers send it: zlib-wrapped (RFC 1950, as RFC 9110 says) or raw
    (RFC 1951, as some servers do), told apart by the first two bytes as browsers and
    aiohttp do. A zlib header is a CMF byte whose low four bits are 8 (deflate) with a
    window of at most 2**15, and a FLG byte that makes the pair a multiple of 31. The
    first byte of a raw stream has those low bits only for a stored, non-final block
    whose padding bits are not zero, which encoders do not write."""

    __slots__ = ("_head", "_inner")

    def __init__(self) -> None:
        self._head = b""
        self._inner: _Decoder | None = None

    def decompress(self, data: bytes, /) -> bytes:
        if self._inner is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            data, self._head = self._head, b""
            cmf, flg = data[0], data[1]
            wrapped = cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return self._inner.decompress(data)

    def flush(self) -> bytes:
        if self._inner is None:  # a body of one byte, or none
            self._inner = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._inner.decompress(self._head) + self._inner.flush()
        return self._inner.flush()


if TYPE_CHECKING:
    def _fits_the_seam(pool: HTTPPool) -> Transport:
        return pool  # mypy checks that HTTPPool, its endpoints and Response fit transport.py
