"""The one relay policy, the same for the three provider backends: a stream that breaks,
an error event, a stream that ends at once, an oversized error body, a stream closed
before it was read, and the probes. Then the relay on its own, over a fake response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kathan.backends.anthropic import AnthropicBackend
from kathan.backends.base import Backend, Delta, DeltaStream, TokenUsage
from kathan.backends.gemini import GeminiBackend
from kathan.backends.http1 import HTTPPool
from kathan.backends.openai import OpenAIBackend
from kathan.backends.relay import ErrorEvent, WholeBody, incomplete, json_object, relay
from kathan.backends.upstream import MAX_ERROR_BODY, Deployment, UpstreamError, error_body
from kathan.protocol.chat import ChatCompletionRequest
from tests.upstreams import anthropic_fake, gemini_fake, openai_fake

PROVIDERS = ["openai", "anthropic", "gemini"]
KEY = "sk-provider"


def chat() -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hello"}]})


@pytest.fixture
async def pool() -> AsyncIterator[HTTPPool]:
    async with HTTPPool() as p:
        yield p


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def backend(provider: str, root: str, session: aiohttp.ClientSession, pool: HTTPPool,
            **fields: Any) -> Backend:
    """``provider``'s backend for a server at ``root`` (openai's base_url has its ``/v1``)."""
    fields.setdefault("api_key", KEY)
    if provider == "openai":
        return OpenAIBackend(Deployment("openai", "m", f"{root}/v1", **fields), session, pool)
    if provider == "anthropic":
        return AnthropicBackend(Deployment("anthropic", "m", root, **fields), session, pool)
    return GeminiBackend(Deployment("gemini", "gemini-2.5-flash", root, **fields),
                         session, pool)


@asynccontextmanager
async def fake(
    provider: str, session: aiohttp.ClientSession, pool: HTTPPool, *,
    die_after: int | None = None, error_after: int | None = None, slow: bool = False,
) -> AsyncIterator[tuple[Backend, asyncio.Event]]:
    """The provider's fake, misbehaving after ``die_after`` or ``error_after`` events, or
    ``slow`` between them; yields the backend and the event set when the client leaves."""
    if provider == "openai":
        o = openai_fake.Script(api_key=KEY, die_after_chunks=die_after,
                               error_after_chunks=error_after, chunk_delay=0.3 if slow else 0)
        async with openai_fake.serve(o) as url:
            yield backend(provider, url.removesuffix("/v1"), session, pool), o.disconnected
    elif provider == "anthropic":
        a = anthropic_fake.Script(die_after=die_after, error_after=error_after,
                                  stall_after=1 if slow else None)
        app = anthropic_fake.make_app(api_key=KEY, script=a)
        async with anthropic_fake.serve(app) as url:
            yield backend(provider, url, session, pool), app[anthropic_fake.STATE].disconnected
    else:
        g = gemini_fake.Script(api_key=KEY, die_after=die_after, error_after=error_after,
                               chunk_delay=0.3 if slow else 0)
        async with gemini_fake.serve(g) as url:
            yield backend(provider, url, session, pool), g.disconnected


@dataclass
class Plain:
    """A server that answers every POST with ``status`` and ``body``, and records GETs."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/event-stream"
    gets: list[tuple[str, Mapping[str, str]]] = field(default_factory=list)


@asynccontextmanager
async def plain(server: Plain) -> AsyncIterator[str]:
    async def post(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=server.status, body=server.body,
                            content_type=server.content_type)

    async def get(request: web.Request) -> web.Response:
        server.gets.append((request.path, dict(request.headers)))
        return web.json_response({"data": []}, status=server.status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", post)
    app.router.add_get("/{tail:.*}", get)
    async with anthropic_fake.serve(app) as url:  # any app on a free port
        yield url


async def drain(stream: DeltaStream) -> list[Delta]:
    got: list[Delta] = []
    async with stream:
        async for delta in stream:
            got.append(delta)
    return got


# -- the same policy for every provider -----------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_stream_that_breaks_mid_way(
    provider: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    async with fake(provider, session, pool, die_after=3) as (b, _):
        stream = await b.open(chat())
        with pytest.raises(UpstreamError) as info:
            await drain(stream)
    error = info.value
    assert (error.status_code, error.retryable, error.code) == (
        503, False, "upstream_stream_broken")
    assert error.retry_after == 1 and error.headers["Retry-After"] == "1"
    assert pool.idle_connections == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_error_event_mid_way(
    provider: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    async with fake(provider, session, pool, error_after=2) as (b, _):
        stream = await b.open(chat())
        with pytest.raises(UpstreamError) as info:
            await drain(stream)
    error = info.value
    assert (error.status_code, error.retryable, error.code) == (
        503, False, "upstream_stream_error")
    assert "overloaded" in error.message.lower()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_error_as_first_event_is_answered_by_open_with_its_status(
    provider: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    async with fake(provider, session, pool, error_after=0) as (b, _):
        with pytest.raises(UpstreamError) as info:
            await b.open(chat())
    error = info.value  # 503 (openai, gemini) and 529 (anthropic's overloaded) are retryable
    assert (error.status_code, error.retryable, error.code) == (503, True, "upstream_error")
    assert error.upstream_status in (503, 529)
    assert "overloaded" in error.message.lower()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_stream_that_ends_at_once_is_answered_by_open(
    provider: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    async with plain(Plain()) as url:
        with pytest.raises(UpstreamError) as info:
            await backend(provider, url, session, pool).open(chat())
    error = info.value
    assert (error.status_code, error.retryable, error.code) == (
        503, True, "upstream_stream_incomplete")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_malformed_first_event_is_answered_by_open(
    provider: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    async with plain(Plain(body=b"data: {not json\n\n")) as url:
        with pytest.raises(UpstreamError) as info:
            await backend(provider, url, session, pool).open(chat())
    assert (info.value.status_code, info.value.code) == (503, "upstream_bad_response")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_error_body_is_read_up_to_the_cap(
    provider: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    # Read whole, the body would be JSON whose message is "read to the end".
    body = b'{"padding": "' + b"x" * (4 * MAX_ERROR_BODY) + b'", "error": {"message": ' \
        b'"read to the end"}}'
    async with plain(Plain(status=500, body=body, content_type="application/json")) as url:
        with pytest.raises(UpstreamError) as info:
            await backend(provider, url, session, pool).open(chat())
    error = info.value
    assert (error.status_code, error.retryable, error.upstream_status) == (503, True, 500)
    assert "read to the end" not in error.message
    assert '{"padding": "xxx' in error.message and len(error.message) < 2100
    assert pool.idle_connections == 0  # the rest was not read: the connection is dropped


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_short_error_body_keeps_its_connection(
    provider: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    body = b'{"error": {"message": "read to the end"}}'
    async with plain(Plain(status=500, body=body, content_type="application/json")) as url:
        with pytest.raises(UpstreamError) as info:
            await backend(provider, url, session, pool).open(chat())
        assert pool.idle_connections == 1
    assert "read to the end" in info.value.message


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_stream_closed_before_it_was_read_closes_the_upstream_response(
    provider: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    async with fake(provider, session, pool, slow=True) as (b, disconnected):
        stream = await b.open(chat())
        assert not disconnected.is_set()
        await stream.aclose()
        await asyncio.wait_for(disconnected.wait(), 5)
    assert pool.idle_connections == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_whole_stream_gives_its_connection_back(
    provider: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    async with fake(provider, session, pool) as (b, _):
        for _ in range(2):
            deltas = await drain(await b.open(chat()))
            assert deltas[-1].usage is not None
        for _ in range(50):  # what follows the last event may be read in the background
            if pool.idle_connections == 1:
                break
            await asyncio.sleep(0.01)
        assert pool.idle_connections == 1


PROBES = {
    "openai": ("/v1/models", "Authorization", f"Bearer {KEY}"),
    "anthropic": ("/v1/models", "x-api-key", KEY),
    "gemini": ("/v1beta/models", "x-goog-api-key", KEY),
}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_probe(provider: str, session: aiohttp.ClientSession, pool: HTTPPool) -> None:
    server = Plain()
    async with plain(server) as url:
        b = backend(provider, url, session, pool, headers={"X-Team": "a"})
        assert await b.probe() is True
        server.status = 404  # answers, if not this path: the deployment is up
        assert await b.probe() is True
        server.status = 503
        assert await b.probe() is False
    path, header, value = PROBES[provider]
    assert [p for p, _ in server.gets] == [path] * 3
    headers = server.gets[0][1]
    assert headers[header] == value and headers["X-Team"] == "a"
    if provider == "anthropic":
        assert headers["anthropic-version"] == "2023-06-01"
    unreachable = backend(provider, "http://127.0.0.1:9", session, pool, connect_timeout=1)
    assert await unreachable.probe() is False


async def test_anthropics_probe_accepts_a_base_url_with_v1(
    session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    server = Plain()
    async with plain(server) as url:
        assert await backend("anthropic", f"{url}/v1/", session, pool).probe()
    assert server.gets[0][0] == "/v1/models"


# -- the relay on its own --------------------------------------------------------


class FakeResponse:
    """A ``Response`` whose body is ``pieces``; it counts what was read and how it ended."""

    def __init__(self, *pieces: bytes, status: int = 200, forever: bytes = b"") -> None:
        self.status = status
        self.reason = "OK"
        self.headers: dict[str, str] = {}
        self._pieces = list(pieces)
        self._forever = forever
        self.read_pieces = 0
        self.ended = False
        self.released = 0
        self.closed = 0
        self.let_go = 0

    @property
    def at_eof(self) -> bool:
        return self.ended

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.iter_any()])

    async def text(self, errors: str = "replace") -> str:
        return (await self.read()).decode("utf-8", errors)

    async def iter_any(self) -> AsyncIterator[bytes]:
        while self._pieces or self._forever:
            self.read_pieces += 1
            yield self._pieces.pop(0) if self._pieces else self._forever
        self.ended = True

    def release(self) -> None:
        self.released += 1

    def release_when_read(self) -> None:
        self.let_go += 1

    def close(self) -> None:
        self.closed += 1


class Lines:
    """A translator: each event's ``text`` is content; ``{"end": true}`` finishes it,
    and so does the end of the body when ``eof_ends``."""

    def __init__(self, *, eof_ends: bool = False) -> None:
        self.done = False
        self.finished = 0
        self.eof_ends = eof_ends
        self.pieces = 0

    def feed(self, event: str | None, data: str) -> list[Delta]:
        item = json_object(data)
        if "error" in item:
            raise ErrorEvent(str(item["error"]), status=item.get("status"))
        if item.get("end"):
            self.done = True
            return []
        self.pieces += 1
        return [Delta(content=str(item["text"]))]

    def counted(self) -> TokenUsage:
        return TokenUsage(0, self.pieces)

    def finish(self) -> list[Delta]:
        self.finished += 1
        if not self.done and not self.eof_ends:
            raise incomplete("no end")
        return [Delta(finish_reason="stop")]


async def test_a_stream_read_to_its_end_releases_the_response() -> None:
    response = FakeResponse(b'data: {"text": "a"}\n\ndata: {"te', b'xt": "b"}\n\n')
    translator = Lines(eof_ends=True)
    deltas = await drain(await relay(response, translator))
    assert [(d.content, d.finish_reason) for d in deltas] == [
        ("a", None), ("b", None), (None, "stop")]
    assert translator.finished == 1
    assert (response.released, response.closed) == (1, 0)


async def test_the_first_event_is_read_before_relay_returns() -> None:
    response = FakeResponse(b'data: {"text": "a"}\n\n', b'data: {"text": "b"}\n\n')
    stream = await relay(response, Lines())
    assert response.read_pieces == 1
    await stream.aclose()
    assert (response.released, response.closed) == (0, 1)


async def test_a_stream_closed_before_iteration_closes_the_response_once() -> None:
    response = FakeResponse(b'data: {"text": "a"}\n\n', forever=b": keep-alive\n\n")
    stream = await relay(response, Lines())
    await stream.aclose()
    await stream.aclose()
    assert (response.released, response.closed) == (0, 1)


@pytest.mark.parametrize(
    ("body", "code", "retryable"),
    [
        (b'data: {"error": "busy", "status": 429}\n\n', "upstream_rate_limited", True),
        (b'data: {"error": "bad", "status": 400}\n\n', "upstream_rejected", False),
        (b'data: {"error": "no status"}\n\n', "upstream_error", True),
        (b"data: [1, 2]\n\n", "upstream_bad_response", True),
        (b"data: \xff\n\n", "upstream_bad_response", True),
        (b"", "upstream_stream_incomplete", True),
    ],
)
async def test_what_goes_wrong_at_the_first_event_is_raised_by_relay(
    body: bytes, code: str, retryable: bool
) -> None:
    response = FakeResponse(body)
    with pytest.raises(UpstreamError) as info:
        await relay(response, Lines())
    assert (info.value.code, info.value.retryable) == (code, retryable)
    assert response.closed == 1


@pytest.mark.parametrize(
    ("tail", "code"),
    [
        (b'data: {"error": "busy", "status": 429}\n\n', "upstream_stream_error"),
        (b'data: {"text": 1}\n\ndata: {"nope": 1}\n\n', "upstream_bad_response"),
        (b"", "upstream_stream_incomplete"),
    ],
)
async def test_what_goes_wrong_later_has_one_code_and_is_not_retryable(
    tail: bytes, code: str
) -> None:
    response = FakeResponse(b'data: {"text": "a"}\n\n', tail)
    stream = await relay(response, Lines())
    with pytest.raises(UpstreamError) as info:
        await drain(stream)
    assert (info.value.status_code, info.value.code, info.value.retryable) == (503, code, False)
    assert response.closed >= 1


async def test_after_done_the_response_is_released_when_its_body_ends() -> None:
    # The last delta does not wait for the body's end: the response is let go, and the
    # transport releases it when the end comes (test_http1 checks that part).
    response = FakeResponse(b'data: {"text": "a"}\n\ndata: {"end": true}\n\n', b"tail")
    deltas = await drain(await relay(response, Lines()))
    assert [d.content for d in deltas] == ["a", None]
    assert not response.ended  # the tail was not waited for
    assert (response.let_go, response.released, response.closed) == (1, 0, 0)


async def test_a_whole_body_is_one_event() -> None:
    response = FakeResponse(b'{"te', b'xt": "all"}')

    class Whole(Lines):
        def feed(self, event: str | None, data: str) -> list[Delta]:
            out = super().feed(event, data)
            self.done = True
            return out

    stream = await relay(response, Whole(), WholeBody())
    assert response.ended  # read whole before relay returned
    assert [d.content for d in await drain(stream)] == ["all", None]


async def test_an_error_body_stops_at_the_cap() -> None:
    response = FakeResponse(status=500, forever=b"x" * 1000)
    raw = await error_body(response)
    assert len(raw) == MAX_ERROR_BODY
    assert response.read_pieces == -(-MAX_ERROR_BODY // 1000)
    assert response.released == 1  # not at its end: HTTPPool closes the connection


# -- what a stream cut short is charged ----------------------------------------------


def test_each_translator_counts_what_the_answer_consumed_so_far() -> None:
    from kathan.backends.anthropic import StreamTranslator as AnthropicTranslator
    from kathan.backends.gemini import StreamTranslator as GeminiTranslator
    from kathan.backends.openai import ChunkTranslator

    # OpenAI-compatible: the usage chunk comes last; before it, one token a piece.
    openai = ChunkTranslator()
    for word in ("a", "b", "c"):
        openai.feed(None, '{"choices": [{"index": 0, "delta": {"content": "%s"}}]}' % word)
    assert openai.counted() == TokenUsage(0, 3)
    openai.feed(None, '{"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}')
    assert openai.counted() == TokenUsage(9, 3)

    # Anthropic: the prompt's size at message_start, then the output deltas seen.
    anthropic = AnthropicTranslator()
    anthropic.feed("message_start", '{"type": "message_start", "message": {"usage": '
                   '{"input_tokens": 12, "cache_read_input_tokens": 4, "output_tokens": 1}}}')
    anthropic.feed("content_block_start", '{"type": "content_block_start", "index": 0, '
                   '"content_block": {"type": "text", "text": ""}}')
    for _ in range(3):
        anthropic.feed("content_block_delta", '{"type": "content_block_delta", "index": 0, '
                       '"delta": {"type": "text_delta", "text": "x"}}')
    assert anthropic.counted() == TokenUsage(16, 3, 4)

    # Gemini: its usageMetadata counts so far, when a chunk carried it.
    gemini = GeminiTranslator()
    gemini.feed(None, '{"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}')
    assert gemini.counted() == TokenUsage(0, 1)
    gemini.feed(None, '{"candidates": [{"content": {"parts": [{"text": " there"}]}}], '
                '"usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 2}}')
    assert gemini.counted() == TokenUsage(7, 2)


async def test_a_relayed_stream_closed_early_counts_what_it_read() -> None:
    response = FakeResponse(b'data: {"text": "a"}\n\ndata: {"text": "b"}\n\n',
                            b'data: {"text": "c"}\n\n', b'data: {"end": true}\n\n')
    stream = await relay(response, Lines())
    async with stream:
        assert (await anext(stream)).content == "a"
        assert (await anext(stream)).content == "b"
    assert stream.counted() == TokenUsage(0, 2)
