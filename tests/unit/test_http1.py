"""HTTPPool, Kathan's lean HTTP/1.1 upstream client (``kathan.backends.http1``).

Each test runs a raw asyncio server on 127.0.0.1 that writes exact HTTP/1.1 bytes, so
every wire case is under control: keep-alive reuse, the request as it is sent,
Content-Length, chunked and read-to-close bodies, content codings, stale connections,
connect and read timeouts, answers that break off or are not HTTP, back-pressure,
interim answers, and closing a response or the pool. Every async test runs twice: on
asyncio's own event loop and on uvloop's (the one Kathan serves with).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import inspect
import json
import random
import shutil
import socket
import ssl
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Self, cast

import pytest
import uvloop

from kathan.backends.http1 import (
    KEEPALIVE,
    HTTPPool,
    Response,
    Target,
    UpstreamConnectError,
    UpstreamConnectionError,
    UpstreamMaybeReceivedError,
    encode_headers,
)

# --- running each test on both event loops -----------------------------------------------

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.SelectorEventLoop,
    "uvloop": uvloop.new_event_loop,
}
TEST_TIMEOUT = 5.0  # a test that hangs fails instead


def on_both_loops(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Turn an ``async def`` test into a sync one run once per event loop in ``LOOPS``.

    pytest-asyncio 1.x chooses loops with a ``pytest_asyncio_loop_factories`` hook, which
    only a conftest or plugin can define (overriding ``event_loop_policy`` is deprecated,
    and the project turns warnings into errors), so this module runs its own loops.
    """

    @functools.wraps(test)
    def run(loop: str, **kwargs: Any) -> None:
        async def bounded() -> None:
            running = type(asyncio.get_running_loop())
            assert running.__module__.split(".")[0] == loop, running
            async with asyncio.timeout(TEST_TIMEOUT):
                await test(**kwargs)

        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(bounded())

    del run.__wrapped__  # pytest reads the signature below; pytest-asyncio sees a sync test
    own = list(inspect.signature(test).parameters.values())
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("loop", inspect.Parameter.POSITIONAL_OR_KEYWORD), *own])
    parametrized: Callable[..., None] = pytest.mark.parametrize("loop", list(LOOPS))(run)
    return parametrized


# --- a raw HTTP/1.1 server ---------------------------------------------------------------


@dataclass
class Request:
    """One request as the server read it off the wire."""

    line: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


class ServerConnection:
    """One accepted connection, handed to the server's handler."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 index: int, server_requests: list[Request]) -> None:
        self.reader = reader
        self.writer = writer
        self.index = index  # 1 for the first connection accepted
        self.server_requests = server_requests  # on all the server's connections
        self.closed_by_client = asyncio.Event()

    async def next_request(self) -> Request | None:
        """The next request, or None once the client has closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            self.closed_by_client.set()
            return None
        except ConnectionError:
            self.closed_by_client.set()
            return None
        line, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers = [(n, v.strip()) for n, _, v in (h.partition(":") for h in lines)]
        length = int(next((v for n, v in headers if n.lower() == "content-length"), "0"))
        body = await self.reader.readexactly(length)
        request = Request(line, headers, body, head + body)
        self.server_requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_client_closes(self, timeout: float = 2.0) -> None:
        """Wait until the client closes the connection (whatever it sends is dropped)."""
        async with asyncio.timeout(timeout):
            try:
                while await self.reader.read(65536):
                    pass
            except ConnectionError:
                pass
        self.closed_by_client.set()


Handler = Callable[[ServerConnection], Awaitable[None]]


class Server:
    """``asyncio.start_server`` on 127.0.0.1, port 0; ``handler`` runs per connection and
    the connection closes when it returns. What the handler raised fails the test."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections: list[ServerConnection] = []
        self.requests: list[Request] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def target(self, path: str = "/v1/chat/completions") -> Target:
        return Target.parse(f"http://127.0.0.1:{self.port}{path}")

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()  # a handler still waiting; those that ended keep their outcome
        outcomes = await asyncio.gather(*self._tasks, return_exceptions=True)
        errors = [e for e in outcomes if isinstance(e, Exception)]  # not CancelledError
        if errors and exc_info[0] is None:
            raise errors[0]  # an assertion in a handler, say

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.append(task)
        conn = ServerConnection(reader, writer, len(self.connections) + 1, self.requests)
        self.connections.append(conn)
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away, which is what many tests are about
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()


def answer(body: bytes = b"", *, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A whole 200 answer, its body framed by Content-Length."""
    lines = ["HTTP/1.1 200 OK", *(f"{n}: {v}" for n, v in headers),
             f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" \
               b"Transfer-Encoding: chunked\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def answering(response: bytes) -> Handler:
    """A keep-alive handler: every request on the connection gets this answer."""

    async def handler(conn: ServerConnection) -> None:
        while await conn.next_request() is not None:
            await conn.send(response)

    return handler


def silent_after_request(conn_seen: asyncio.Event | None = None) -> Handler:
    """Read the request, answer nothing, and wait for the client to give up."""

    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        if conn_seen is not None:
            conn_seen.set()
        await conn.until_client_closes(timeout=TEST_TIMEOUT)

    return handler


@asynccontextmanager
async def opened_pool(*, keepalive: float = 60.0,
                      max_idle_per_host: int = 1024) -> AsyncIterator[HTTPPool]:
    pool = HTTPPool(keepalive=keepalive, max_idle_per_host=max_idle_per_host)
    try:
        yield pool
    finally:
        await pool.close()


async def post(pool: HTTPPool, server: Server, *, read_timeout: float = 120.0) -> Response:
    """A chat-completions-like POST, as the openai backend sends them."""
    return await pool.request(server.target(), b"POST", {"Content-Type": "application/json"},
                              b'{"model": "m"}', read_timeout=read_timeout)


def stream(response: Response) -> AsyncGenerator[bytes, None]:
    """``iter_any()``, typed as the async generator it is (so that it has ``aclose``)."""
    return cast(AsyncGenerator[bytes, None], response.iter_any())


async def pieces_of(response: Response) -> list[bytes]:
    return [piece async for piece in response.iter_any()]


async def until(condition: Callable[[], bool], timeout: float = 1.0) -> None:
    """Wait until ``condition()`` holds (a state the event loop gets to in its own time)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def free_port_refusing() -> socket.socket:
    """A bound socket that does not listen: connecting to its port is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


# --- Target and encode_headers -----------------------------------------------------------


def test_a_target_keeps_the_path_the_query_and_the_explicit_port() -> None:
    target = Target.parse("http://localhost:8080/v1/models?limit=5&order=a%20b#fragment")
    assert target == Target("http", "localhost", 8080, b"/v1/models?limit=5&order=a%20b",
                            b"localhost:8080")
    assert target.key == ("http", "localhost", 8080)


def test_a_target_without_a_port_or_path_gets_the_scheme_defaults() -> None:
    assert Target.parse("http://example.com") == Target(
        "http", "example.com", 80, b"/", b"example.com")
    assert Target.parse("https://api.example.com") == Target(
        "https", "api.example.com", 443, b"/", b"api.example.com")


def test_a_target_writes_ipv6_and_international_hosts_as_sent_on_the_wire() -> None:
    assert Target.parse("http://[::1]:9000/x") == Target("http", "::1", 9000, b"/x",
                                                          b"[::1]:9000")
    target = Target.parse("http://bücher.example/caf\u00e9")
    assert target.host == "xn--bcher-kva.example"
    assert target.path == b"/caf%C3%A9"


@pytest.mark.parametrize("url", ["ftp://example.com/file", "ws://example.com/socket",
                                 "example.com/v1", "/v1/chat/completions", "http:///v1"])
def test_target_parse_rejects_a_url_that_is_not_http(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        Target.parse(url)


def test_encode_headers_writes_one_line_per_header() -> None:
    assert encode_headers({"Content-Type": "application/json", "X-Name": "caf\u00e9"}) == (
        b"Content-Type: application/json\r\nX-Name: caf\xe9\r\n")
    assert encode_headers({}) == b""


@pytest.mark.parametrize("headers", [
    {"X-Evil": "a\r\nInjected: yes"},
    {"X-Evil": "a\nb"},
    {"X-Evil": "a\rb"},
    {"X-Evil\r\nInjected": "yes"},
])
def test_encode_headers_refuses_a_line_break(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="line break"):
        encode_headers(headers)


# --- Content-Length answers and keep-alive -----------------------------------------------


@on_both_loops
async def test_a_content_length_answer_is_read_and_its_connection_reused() -> None:
    body = json.dumps({"id": "chatcmpl-1", "choices": []}).encode()
    ok = answer(body, headers=(("Content-Type", "application/json"), ("X-Request-Id", "r-7")))
    async with Server(answering(ok)) as server, opened_pool() as pool:
        response = await post(pool, server)
        assert response.status == 200
        assert response.reason == "OK"
        assert response.headers["content-type"] == "application/json"
        assert response.headers["X-REQUEST-ID"] == "r-7"
        assert response.headers["Content-Length"] == str(len(body))
        assert await response.read() == body
        assert response.at_eof
        assert pool.idle_connections == 1

        again = await post(pool, server)
        assert json.loads(await again.text()) == {"id": "chatcmpl-1", "choices": []}
        assert len(server.connections) == 1  # the same connection, kept alive
        assert len(server.requests) == 2
        assert pool.idle_connections == 1


@on_both_loops
async def test_the_request_reaches_the_server_exactly_as_written() -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-test"}
    async with Server(answering(answer(b"{}"))) as server, opened_pool() as pool:
        for sent in (headers, encode_headers(headers)):  # as a mapping, then pre-encoded
            response = await pool.request(server.target(), b"POST", sent, body)
            await response.read()
        first, second = server.requests
        assert first.line == "POST /v1/chat/completions HTTP/1.1"
        assert first.header("Host") == f"127.0.0.1:{server.port}"
        assert first.header("Content-Length") == str(len(body))
        assert first.header("Content-Type") == "application/json"
        assert first.header("Authorization") == "Bearer sk-test"
        assert first.body == body
        assert first.raw == (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n"
            "Authorization: Bearer sk-test\r\n\r\n").encode() + body
        assert second.raw == first.raw


@on_both_loops
async def test_a_target_with_a_query_string_is_requested_with_it() -> None:
    async with Server(answering(answer(b"[]"))) as server, opened_pool() as pool:
        target = Target.parse(f"http://127.0.0.1:{server.port}/v1/models?limit=5&q=a%20b")
        response = await pool.request(target, b"GET", {}, b"")
        assert await response.read() == b"[]"
        (request,) = server.requests
        assert request.line == "GET /v1/models?limit=5&q=a%20b HTTP/1.1"
        assert request.header("Content-Length") == "0"
        assert request.body == b""


@on_both_loops
async def test_a_no_content_answer_without_length_keeps_the_connection() -> None:
    no_content = b"HTTP/1.1 204 No Content\r\nX-Note: none\r\n\r\n"
    async with Server(answering(no_content)) as server, opened_pool() as pool:
        for _ in range(2):
            response = await post(pool, server)
            assert response.status == 204
            assert await response.read() == b""
        assert len(server.connections) == 1


@on_both_loops
async def test_an_answer_cut_into_tiny_packets_is_parsed_whole() -> None:
    body = b'{"content": "' + b"x" * 300 + b'"}'
    whole = answer(body, headers=(("Content-Type", "application/json"),
                                  ("X-Long-Header", "v" * 200)))

    async def handler(conn: ServerConnection) -> None:
        while await conn.next_request() is not None:
            for i in range(0, len(whole), 37):
                await conn.send(whole[i:i + 37])
                await asyncio.sleep(0.001)

    async with Server(handler) as server, opened_pool() as pool:
        response = await post(pool, server)
        assert response.headers["X-Long-Header"] == "v" * 200
        assert await response.read() == body
        assert pool.idle_connections == 1


@on_both_loops
async def test_concurrent_requests_each_get_a_connection_and_idle_ones_are_capped() -> None:
    both_in = asyncio.Event()

    async def handler(conn: ServerConnection) -> None:
        while (request := await conn.next_request()) is not None:
            if len(conn.server_requests) == 2:
                both_in.set()
            await asyncio.wait_for(both_in.wait(), 2)  # one request at a time per connection
            await conn.send(answer(request.body))

    async with Server(handler) as server, opened_pool(max_idle_per_host=1) as pool:
        first, second = await asyncio.gather(post(pool, server), post(pool, server))
        assert len(server.connections) == 2
        await first.read()
        await second.read()
        assert pool.idle_connections == 1  # the other one is closed, not kept
        await until(lambda: any(c.closed_by_client.is_set() for c in server.connections))
        await asyncio.sleep(0.02)
        assert sum(c.closed_by_client.is_set() for c in server.connections) == 1


@on_both_loops
async def test_an_idle_connection_older_than_the_keepalive_is_not_reused() -> None:
    async with Server(answering(answer(b"ok"))) as server, opened_pool(keepalive=0.1) as pool:
        await (await post(pool, server)).read()
        await asyncio.sleep(0.15)
        await (await post(pool, server)).read()
        assert len(server.connections) == 2
        await asyncio.wait_for(server.connections[0].closed_by_client.wait(), 1)


# --- chunked and read-to-close bodies ----------------------------------------------------


@on_both_loops
async def test_a_chunked_body_arrives_piece_by_piece_before_its_end() -> None:
    first_received = asyncio.Event()
    last_sent = False

    async def handler(conn: ServerConnection) -> None:
        nonlocal last_sent
        while await conn.next_request() is not None:
            last_sent = False
            await conn.send(CHUNKED_HEAD + chunk(b"data: first\n\n"))
            await asyncio.wait_for(first_received.wait(), 2)
            await asyncio.sleep(0.02)
            await conn.send(chunk(b"data: second\n\n"))
            await asyncio.sleep(0.02)
            last_sent = True
            await conn.send(chunk(b"data: [DONE]\n\n") + LAST_CHUNK)

    async with Server(handler) as server, opened_pool() as pool:
        for _ in range(2):
            first_received.clear()
            response = await post(pool, server)
            assert response.headers["Transfer-Encoding"] == "chunked"
            pieces: list[bytes] = []
            async for piece in response.iter_any():
                if not pieces:
                    assert piece == b"data: first\n\n"
                    assert not last_sent  # it came before the server sent the end
                    first_received.set()
                assert piece
                pieces.append(piece)
            assert b"".join(pieces) == b"data: first\n\ndata: second\n\ndata: [DONE]\n\n"
            assert response.at_eof
            assert pool.idle_connections == 1
        assert len(server.connections) == 1


@on_both_loops
async def test_a_slow_but_steady_stream_does_not_time_out() -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(CHUNKED_HEAD)
        for i in range(5):
            await asyncio.sleep(0.1)
            await conn.send(chunk(b"piece %d;" % i))
        await conn.send(LAST_CHUNK)
        await conn.until_client_closes()

    async with Server(handler) as server, opened_pool() as pool:
        response = await post(pool, server, read_timeout=0.3)
        started = time.monotonic()
        body = b"".join(await pieces_of(response))
        assert body == b"piece 0;piece 1;piece 2;piece 3;piece 4;"
        assert time.monotonic() - started >= 0.4  # longer than read_timeout in all


@on_both_loops
async def test_a_body_that_ends_with_the_connection_is_read_whole_and_not_reused() -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part, ")
        await asyncio.sleep(0.02)
        await conn.send(b"second part")
        # returning closes the connection: that ends the body

    async with Server(handler) as server, opened_pool() as pool:
        response = await post(pool, server)
        assert await response.read() == b"first part, second part"
        assert pool.idle_connections == 0
        assert (await post(pool, server)).status == 200
        assert len(server.connections) == 2


@pytest.mark.parametrize("head", [
    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5",
    "HTTP/1.0 200 OK\r\nContent-Length: 5",
], ids=["connection-close", "http-1.0"])
@on_both_loops
async def test_an_answer_that_closes_the_connection_is_read_and_not_reused(head: str) -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(head.encode() + b"\r\n\r\nhello")
        await conn.until_client_closes()  # the server leaves the socket open: the client closes

    async with Server(handler) as server, opened_pool() as pool:
        response = await post(pool, server)
        assert await response.read() == b"hello"
        assert pool.idle_connections == 0
        await asyncio.wait_for(server.connections[0].closed_by_client.wait(), 1)
        await (await post(pool, server)).read()
        assert len(server.connections) == 2


# --- content codings ---------------------------------------------------------------------

TEXT = ("data: " + "the quick brown fox jumps over the lazy dog " * 200 + "\n\n").encode()


def raw_deflate(data: bytes) -> bytes:
    """Deflate without zlib's header and checksum (RFC 1951), as some servers send it."""
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(("coding", "compress"), [
    ("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress),
    ("deflate", raw_deflate), ("GZip", gzip.compress),
], ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw", "GZip"])
@on_both_loops
async def test_a_compressed_body_is_read_decompressed(
        coding: str, compress: Callable[[bytes], bytes]) -> None:
    encoded = compress(TEXT)
    ok = answer(encoded, headers=(("Content-Encoding", coding),))
    async with Server(answering(ok)) as server, opened_pool() as pool:
        response = await post(pool, server)
        assert await response.read() == TEXT
        assert pool.idle_connections == 1


@on_both_loops
async def test_a_gzip_body_streamed_in_chunks_is_decompressed_as_it_comes() -> None:
    encoded = gzip.compress(TEXT)

    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(CHUNKED_HEAD.replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n"))
        for i in range(0, len(encoded), 50):
            await conn.send(chunk(encoded[i:i + 50]))
            await asyncio.sleep(0.001)
        await conn.send(LAST_CHUNK)
        await conn.until_client_closes()

    async with Server(handler) as server, opened_pool() as pool:
        response = await post(pool, server)
        pieces = await pieces_of(response)
        assert b"".join(pieces) == TEXT
        assert all(pieces)


@pytest.mark.parametrize("compress", [zlib.compress, raw_deflate], ids=["zlib", "raw"])
@on_both_loops
async def test_a_deflate_body_whose_first_piece_is_one_byte_is_decompressed(
        compress: Callable[[bytes], bytes]) -> None:
    encoded = compress(TEXT)
    assert (encoded[0] & 0x0F == 8) == (compress is zlib.compress)  # the form is in byte 1

    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(CHUNKED_HEAD.replace(b"\r\n\r\n",
                                             b"\r\nContent-Encoding: deflate\r\n\r\n"))
        await conn.send(chunk(encoded[:1]))  # too little to tell the two forms apart
        await asyncio.sleep(0.01)
        for i in range(1, len(encoded), 50):
            await conn.send(chunk(encoded[i:i + 50]))
        await conn.send(LAST_CHUNK)
        await conn.until_client_closes()

    async with Server(handler) as server, opened_pool() as pool:
        response = await post(pool, server)
        assert b"".join(await pieces_of(response)) == TEXT


@on_both_loops
async def test_an_unknown_content_coding_fails_the_read() -> None:
    brotli = answer(b"\x1b\x03\x00\xf8\xa5\x02", headers=(("Content-Encoding", "br"),))
    async with Server(answering(brotli)) as server, opened_pool() as pool:
        response = await post(pool, server)
        assert response.status == 200
        with pytest.raises(UpstreamConnectionError, match="content coding.*br"):
            await response.read()
        assert pool.idle_connections == 0


@on_both_loops
async def test_an_unknown_content_coding_yields_no_undecoded_bytes() -> None:
    brotli = answer(b"\x1b\x03\x00\xf8\xa5\x02", headers=(("Content-Encoding", "br"),))
    async with Server(answering(brotli)) as server, opened_pool() as pool:
        response = await post(pool, server)
        await until(lambda: response.complete)  # the body is in, as it usually is
        received: list[bytes] = []
        with pytest.raises(UpstreamConnectionError):
            async for piece in response.iter_any():
                received.append(piece)
        assert received == []


@on_both_loops
async def test_a_corrupt_gzip_body_fails_the_read() -> None:
    corrupt = answer(b"\x1f\x8b\x08\x00not gzip at all", headers=(("Content-Encoding", "gzip"),))
    async with Server(answering(corrupt)) as server, opened_pool() as pool:
        response = await post(pool, server)
        with pytest.raises(UpstreamConnectionError, match="corrupt"):
            await response.read()
        assert pool.idle_connections == 0


# --- stale connections and connection failures ------------------------------------------


@on_both_loops
async def test_a_kept_alive_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def handler(conn: ServerConnection) -> None:
        request = await conn.next_request()
        assert request is not None
        await conn.send(answer(b"answer %d" % conn.index))  # keep-alive, then close anyway

    async with Server(handler) as server, opened_pool() as pool:
        assert await (await post(pool, server)).read() == b"answer 1"
        await until(lambda: pool.idle_connections == 0)  # the pool saw the close
        assert await (await post(pool, server)).read() == b"answer 2"
        assert len(server.connections) == 2
        assert len(server.requests) == 2


@on_both_loops
async def test_an_idle_connection_whose_peer_closed_before_the_loop_noticed_is_not_used(
) -> None:
    async def handler(conn: ServerConnection) -> None:
        while await conn.next_request() is not None:  # on the first connection, a
            await conn.send(answer(b"answer %d" % conn.index))  # request sent too late

    async with Server(handler) as server, opened_pool() as pool:
        assert await (await post(pool, server)).read() == b"answer 1"
        assert pool.idle_connections == 1
        # The server's side sends its FIN now, and the event loop does not run until the
        # next request has picked its connection: only the socket knows of the close.
        fd = server.connections[0].writer.get_extra_info("socket").fileno()
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as server_side:
            server_side.shutdown(socket.SHUT_WR)
        time.sleep(0.05)  # noqa: ASYNC251 (the loop is held on purpose while the FIN crosses)
        assert await (await post(pool, server)).read() == b"answer 2"
        assert len(server.connections) == 2
        assert len(server.requests) == 2  # the second went once, on the new connection
        await asyncio.wait_for(server.connections[0].closed_by_client.wait(), 1)


def test_the_default_keepalive_is_shorter_than_common_servers_idle_timeouts() -> None:
    # uvicorn (vLLM, llama-cpp-python) and Node close idle connections after 5 s; a
    # connection kept longer could be closed by the server just as a request goes out.
    assert KEEPALIVE < 5.0
    assert HTTPPool()._keepalive == KEEPALIVE


@on_both_loops
async def test_a_kept_alive_connection_the_server_closes_at_once_is_replaced() -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(answer(b"answer %d" % conn.index))

    async with Server(handler) as server, opened_pool() as pool:
        for i in range(1, 6):  # whether or not the client saw the close yet, no error
            assert await (await post(pool, server)).read() == b"answer %d" % i


@on_both_loops
async def test_a_request_on_a_kept_alive_connection_closed_after_reading_it_is_not_resent(
) -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(answer(b"answer %d" % conn.index))
        if conn.index == 1:
            await conn.next_request()  # the next request goes unanswered: the server closes

    async with Server(handler) as server, opened_pool() as pool:
        assert await (await post(pool, server)).read() == b"answer 1"
        assert pool.idle_connections == 1
        with pytest.raises(UpstreamMaybeReceivedError,
                           match="kept-alive connection.*may have received") as caught:
            await post(pool, server)
        assert isinstance(caught.value, UpstreamConnectionError)
        assert not isinstance(caught.value, UpstreamConnectError)
        assert len(server.connections) == 1  # no second try on a new connection
        assert len(server.requests) == 2  # the second request was sent once
        assert pool.idle_connections == 0
        assert await (await post(pool, server)).read() == b"answer 2"  # a new connection


@on_both_loops
async def test_a_new_connection_closed_without_an_answer_raises() -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()  # and close without a word

    async with Server(handler) as server, opened_pool() as pool:
        with pytest.raises(UpstreamConnectionError, match="closed the connection") as caught:
            await post(pool, server)
        assert isinstance(caught.value, UpstreamMaybeReceivedError)
        assert "new connection" in str(caught.value)
        assert len(server.connections) == 1  # no second try on a new connection
        assert len(server.requests) == 1


@on_both_loops
async def test_an_answer_that_breaks_off_in_its_status_line_is_not_maybe_received() -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(b"HTTP/1.1 200")  # the server read the request: it answers

    async with Server(handler) as server, opened_pool() as pool:
        with pytest.raises(UpstreamConnectionError, match="closed the connection") as caught:
            await post(pool, server)
        assert not isinstance(caught.value, UpstreamMaybeReceivedError | UpstreamConnectError)
        assert len(server.requests) == 1


@on_both_loops
async def test_a_refused_connection_raises_upstream_connection_error() -> None:
    with free_port_refusing() as sock:
        port = sock.getsockname()[1]
        target = Target.parse(f"http://127.0.0.1:{port}/v1/chat/completions")
        async with opened_pool() as pool:
            with pytest.raises(UpstreamConnectionError, match="cannot connect") as caught:
                await pool.request(target, b"POST", {}, b"{}")
            assert isinstance(caught.value, UpstreamConnectError)  # nothing was sent
            assert not isinstance(caught.value, UpstreamMaybeReceivedError)
            assert isinstance(caught.value, ConnectionError)
            assert isinstance(caught.value, OSError)
            assert isinstance(caught.value.__cause__, ConnectionRefusedError)
            assert pool.idle_connections == 0


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux's full accept queue")
@on_both_loops
async def test_a_connect_that_hangs_times_out() -> None:
    # A listening socket whose accept queue is full drops further SYNs (Linux).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):
                filler = socket.socket()
                filler.setblocking(False)
                fillers.append(filler)
                with suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            await asyncio.sleep(0.05)
            target = Target.parse(f"http://127.0.0.1:{port}/")
            async with opened_pool() as pool:
                started = time.monotonic()
                with pytest.raises(TimeoutError, match="connecting to 127.0.0.1") as caught:
                    await pool.request(target, b"GET", {}, b"", connect_timeout=0.2)
                assert isinstance(caught.value, UpstreamConnectError)  # nothing was sent
                assert 0.15 <= time.monotonic() - started < 1.5
        finally:
            for filler in fillers:
                filler.close()


# --- read timeouts -----------------------------------------------------------------------


@on_both_loops
async def test_a_server_that_never_answers_times_out() -> None:
    async with Server(silent_after_request()) as server, opened_pool() as pool:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="sent nothing for 0.3 s"):
            await post(pool, server, read_timeout=0.3)
        assert 0.25 <= time.monotonic() - started < 1.5
        await asyncio.wait_for(server.connections[0].closed_by_client.wait(), 1)
        assert pool.idle_connections == 0


@on_both_loops
async def test_a_body_that_goes_silent_midway_times_out() -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await conn.until_client_closes()

    async with Server(handler) as server, opened_pool() as pool:
        response = await post(pool, server, read_timeout=0.3)
        received = []
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async for piece in response.iter_any():
                received.append(piece)
        assert b"".join(received) == b"x" * 10
        assert 0.2 <= time.monotonic() - started < 1.5
        await asyncio.wait_for(server.connections[0].closed_by_client.wait(), 1)
        assert pool.idle_connections == 0


# --- answers that break off or are not HTTP ----------------------------------------------


@pytest.mark.parametrize("cut", [
    CHUNKED_HEAD + chunk(b"first") + b"10\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst" + b"abc",
], ids=["chunked", "content-length"])
@on_both_loops
async def test_a_body_cut_off_midway_raises_after_the_pieces_that_came(cut: bytes) -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(cut)
        await asyncio.sleep(0.05)  # then the server drops the connection

    async with Server(handler) as server, opened_pool() as pool:
        response = await post(pool, server)
        received = []
        with pytest.raises(UpstreamConnectionError, match="closed the connection"):
            async for piece in response.iter_any():
                received.append(piece)
        assert b"".join(received) == b"firstabc"
        assert pool.idle_connections == 0


@pytest.mark.parametrize("garbage", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
], ids=["not-http", "bad-status", "bad-length", "bad-chunk"])
@on_both_loops
async def test_a_malformed_answer_raises(garbage: bytes) -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(garbage)
        await conn.until_client_closes()

    async with Server(handler) as server, opened_pool() as pool:
        with pytest.raises(UpstreamConnectionError, match="not HTTP"):
            response = await post(pool, server)
            await response.read()
        await asyncio.wait_for(server.connections[0].closed_by_client.wait(), 1)
        assert pool.idle_connections == 0


@on_both_loops
async def test_a_malformed_answer_on_a_reused_connection_is_not_sent_again() -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(answer(b"ok"))
        await conn.next_request()
        await conn.send(b"garbage\r\n\r\n")
        await conn.until_client_closes()

    async with Server(handler) as server, opened_pool() as pool:
        await (await post(pool, server)).read()
        with pytest.raises(UpstreamConnectionError):
            await post(pool, server)
        assert len(server.connections) == 1


@on_both_loops
async def test_a_switch_of_protocols_raises() -> None:
    upgrade = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
               b"Upgrade: websocket\r\n\r\n")
    async with Server(answering(upgrade)) as server, opened_pool() as pool:
        with pytest.raises(UpstreamConnectionError, match="switched protocols"):
            await post(pool, server)


# --- interim answers ---------------------------------------------------------------------


@on_both_loops
async def test_interim_answers_are_skipped_for_the_real_one() -> None:
    async def handler(conn: ServerConnection) -> None:
        while await conn.next_request() is not None:
            await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            await asyncio.sleep(0.02)
            await conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
                            + answer(b'{"ok": true}', headers=(("X-Final", "yes"),)))

    async with Server(handler) as server, opened_pool() as pool:
        for _ in range(2):
            response = await post(pool, server)
            assert response.status == 200
            assert response.headers["X-Final"] == "yes"
            assert "Link" not in response.headers
            assert await response.read() == b'{"ok": true}'
        assert len(server.connections) == 1


# --- closing a response, back-pressure, closing the pool ---------------------------------


@pytest.mark.parametrize("drop", ["close", "release"])
@on_both_loops
async def test_dropping_a_response_midstream_closes_its_connection(drop: str) -> None:
    async def handler(conn: ServerConnection) -> None:
        request = await conn.next_request()
        if conn.index == 1:
            await conn.send(CHUNKED_HEAD + chunk(b"first"))
            await conn.until_client_closes()  # the reader gets b"": the client left
        elif request is not None:
            await conn.send(answer(b"fresh"))

    async with Server(handler) as server, opened_pool() as pool:
        response = await post(pool, server)
        pieces = stream(response)
        assert await anext(pieces) == b"first"
        getattr(response, drop)()
        await pieces.aclose()
        await asyncio.wait_for(server.connections[0].closed_by_client.wait(), 1)
        assert pool.idle_connections == 0
        assert await (await post(pool, server)).read() == b"fresh"
        assert len(server.connections) == 2


BIG = random.Random(1).randbytes(2 * 1024 * 1024)


def big_answer(body: bytes, framing: str) -> bytes:
    if framing == "content-length":
        return answer(body)
    step = 64 * 1024
    return CHUNKED_HEAD + b"".join(
        chunk(body[i:i + step]) for i in range(0, len(body), step)) + LAST_CHUNK


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@on_both_loops
async def test_a_slow_reader_of_a_fast_body_loses_nothing_and_does_not_time_out(
        framing: str) -> None:
    async with Server(answering(big_answer(BIG, framing))) as server, opened_pool() as pool:
        response = await post(pool, server, read_timeout=0.1)
        await asyncio.sleep(0.2)  # read nothing, longer than the read timeout
        assert await response.read() == BIG  # a slow reader is not a silent upstream
        assert pool.idle_connections == 1


@on_both_loops
async def test_a_reader_that_reads_nothing_holds_back_the_server() -> None:
    # More than the kernel's socket buffers hold, so a client that kept reading the
    # socket into memory would let the server finish writing.
    huge = random.Random(2).randbytes(16 * 1024 * 1024)
    sent_all = asyncio.Event()

    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(answer(huge))
        sent_all.set()
        await conn.until_client_closes()

    async with Server(handler) as server, opened_pool() as pool:
        response = await post(pool, server)
        await asyncio.sleep(0.1)  # reading 16 MiB off loopback takes a few ms
        assert not sent_all.is_set()  # the client stopped reading the socket
        assert await response.read() == huge
        await asyncio.wait_for(sent_all.wait(), 1)


@on_both_loops
async def test_a_connection_whose_body_ended_while_held_back_stays_in_the_pool() -> None:
    async def handler(conn: ServerConnection) -> None:
        while await conn.next_request() is not None:
            await conn.send(CHUNKED_HEAD + chunk(b"a" * 250_000))
            await asyncio.sleep(0.05)
            # This pushes the client over its high-water mark and ends the body at once.
            await conn.send(chunk(b"b" * 20_000) + LAST_CHUNK)

    async with Server(handler) as server, opened_pool() as pool:
        response = await post(pool, server, read_timeout=0.1)
        await asyncio.sleep(0.1)  # the whole body is in, and reading is held back
        assert len(await response.read()) == 270_000
        assert pool.idle_connections == 1
        await asyncio.sleep(0.2)  # idle: longer than read_timeout, far under keepalive
        assert pool.idle_connections == 1
        await (await post(pool, server)).read()
        assert len(server.connections) == 1


@on_both_loops
async def test_closing_the_pool_closes_its_connections_and_refuses_requests() -> None:
    async def handler(conn: ServerConnection) -> None:
        while await conn.next_request() is not None:
            if conn.index == 1:
                await conn.send(CHUNKED_HEAD + chunk(b"first"))  # and the stream goes on
            else:
                await conn.send(answer(b"ok"))

    async with Server(handler) as server:
        pool = HTTPPool()
        streaming = await pool.request(server.target(), b"POST", {}, b"")
        pieces = stream(streaming)
        assert await anext(pieces) == b"first"
        assert await (await post(pool, server)).read() == b"ok"  # a second connection
        assert pool.idle_connections == 1

        await pool.close()
        assert pool.idle_connections == 0
        with pytest.raises(UpstreamConnectionError):
            await anext(pieces)  # the stream in flight breaks off
        await pieces.aclose()
        for conn in server.connections:
            await asyncio.wait_for(conn.closed_by_client.wait(), 1)
        with pytest.raises(UpstreamConnectError, match="closed"):
            await post(pool, server)
        assert len(server.connections) == 2


# --- cancellation ------------------------------------------------------------------------


@on_both_loops
async def test_a_request_cancelled_before_its_answer_closes_its_connection() -> None:
    arrived = asyncio.Event()
    async with Server(silent_after_request(arrived)) as server, opened_pool() as pool:
        task = asyncio.create_task(post(pool, server))
        await asyncio.wait_for(arrived.wait(), 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.connections[0].closed_by_client.wait(), 0.3)


# --- https -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A throwaway self-signed certificate for localhost and 127.0.0.1 (openssl's CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
         "-out", cert, "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


async def _tls_server(cert: str, key: str, body: bytes,
                      accepted: list[None] | None = None) -> tuple[asyncio.Server, int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if accepted is not None:
            accepted.append(None)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                writer.write(answer(body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


@on_both_loops
async def test_https_with_a_trusted_certificate_is_read_and_kept_alive(
    certificate: tuple[str, str],
) -> None:
    cert, key = certificate
    accepted: list[None] = []
    server, port = await _tls_server(cert, key, b'{"ok": true}', accepted)
    trusted = ssl.create_default_context(cafile=cert)
    pool = HTTPPool(ssl_context=trusted)
    try:
        target = Target.parse(f"https://localhost:{port}/v1/chat/completions")
        for _ in range(2):
            response = await pool.request(target, b"POST", {}, b"{}")
            assert response.status == 200
            assert await response.read() == b'{"ok": true}'
            await asyncio.sleep(0.05)  # TLS's late records (session tickets) are in by now
        assert pool.idle_connections == 1
        assert len(accepted) == 1  # the idle TLS connection was fit for reuse
    finally:
        await pool.close()
        server.close()


@on_both_loops
async def test_https_with_an_untrusted_certificate_is_refused(
    certificate: tuple[str, str],
) -> None:
    cert, key = certificate
    server, port = await _tls_server(cert, key, b"{}")
    pool = HTTPPool()  # the system's CA store does not know the test certificate
    try:
        with pytest.raises(UpstreamConnectionError, match="certificate"):
            await pool.request(Target.parse(f"https://localhost:{port}/v1"), b"POST", {}, b"{}")
    finally:
        await pool.close()
        server.close()


@on_both_loops
async def test_a_response_let_go_before_its_end_is_released_when_the_body_ends() -> None:
    # An event stream's last event came; the chunked body's end is still on its way. The
    # reader lets go at once, and the connection goes back to the pool when the end comes.
    let_go = asyncio.Event()

    async def handler(conn: ServerConnection) -> None:
        while await conn.next_request() is not None:
            await conn.send(CHUNKED_HEAD + chunk(b"data: [DONE]\n\n"))
            await asyncio.wait_for(let_go.wait(), TEST_TIMEOUT)
            await conn.send(chunk(b"data: late\n\n") + LAST_CHUNK)

    async with Server(handler) as server, opened_pool() as pool:
        for _ in range(2):
            let_go.clear()
            response = await post(pool, server)
            pieces = stream(response)
            assert await anext(pieces) == b"data: [DONE]\n\n"
            response.release_when_read()
            assert pool.idle_connections == 0  # not before the body ended
            let_go.set()
            await until(lambda: pool.idle_connections == 1)
            await pieces.aclose()
        assert len(server.connections) == 1  # the one connection, reused


@on_both_loops
async def test_a_response_let_go_whose_body_breaks_is_closed() -> None:
    let_go = asyncio.Event()

    async def handler(conn: ServerConnection) -> None:
        await conn.next_request()
        await conn.send(CHUNKED_HEAD + chunk(b"data: [DONE]\n\n"))
        await asyncio.wait_for(let_go.wait(), TEST_TIMEOUT)
        # and the connection closes without the body's end

    async with Server(handler) as server, opened_pool() as pool:
        response = await post(pool, server)
        pieces = stream(response)
        assert await anext(pieces) == b"data: [DONE]\n\n"
        response.release_when_read()
        let_go.set()
        # The pool's own bookkeeping: the broken connection is dropped, not pooled.
        await until(lambda: not pool._all)
        assert pool.idle_connections == 0
        await pieces.aclose()
