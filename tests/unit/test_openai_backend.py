"""The ``openai`` backend over ``HTTPPool``, against small aiohttp upstreams: what it
sends, compressed answers, redirects, kept-alive connections, an upstream that leaves."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kathan.backends.base import Delta, DeltaStream
from kathan.backends.http1 import HTTPPool
from kathan.backends.openai import OpenAIBackend
from kathan.backends.upstream import Deployment, UpstreamError
from kathan.protocol.chat import ChatCompletionRequest
from tests.upstreams import openai_fake

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REPLY = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up",
         "choices": [{"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": "Hello there."}}],
         "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


@asynccontextmanager
async def upstream(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], **fields})


async def collect(stream: DeltaStream) -> list[Delta]:
    async with stream:
        return [d async for d in stream]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_the_request_goes_as_sent_and_the_answer_comes_back_as_deltas(session: aiohttp.ClientSession) -> None:
    seen: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def chat(r: web.Request) -> web.StreamResponse:
        seen.append((dict(r.headers), await r.json()))
        return web.json_response(REPLY)

    pool = HTTPPool()
    async with upstream(chat) as url:
        backend = OpenAIBackend(Deployment("openai", "up", url, api_key="sk-up",
                                           headers={"X-Team": "a"}), session, pool)
        for _ in range(3):
            deltas = await collect(await backend.open(request(top_k=3, temperature=0.5)))
            assert "".join(d.content or "" for d in deltas) == "Hello there."
            assert deltas[-1].usage is not None and deltas[-1].usage.prompt_tokens == 5
        assert pool.idle_connections == 1  # one kept-alive connection served all three
    headers, body = seen[0]
    assert headers["Authorization"] == "Bearer sk-up" and headers["X-Team"] == "a"
    assert body["model"] == "up" and body["top_k"] == 3 and body["temperature"] == 0.5
    await pool.close()


async def test_a_compressed_answer_is_read(session: aiohttp.ClientSession) -> None:
    async def chat(r: web.Request) -> web.StreamResponse:
        response = web.Response(body=json.dumps(REPLY).encode(),
                                content_type="application/json")
        response.enable_compression(force=web.ContentCoding.gzip)
        return response

    pool = HTTPPool()
    async with upstream(chat) as url:
        deltas = await collect(await OpenAIBackend(Deployment("openai", "up", url), session, pool)
                               .open(request()))
    assert "".join(d.content or "" for d in deltas) == "Hello there."
    await pool.close()


async def test_a_redirect_is_a_clear_error_not_followed(session: aiohttp.ClientSession) -> None:
    async def chat(r: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("https://elsewhere.example/v1/chat/completions")

    pool = HTTPPool()
    async with upstream(chat) as url:
        with pytest.raises(UpstreamError) as info:
            await OpenAIBackend(Deployment("openai", "up", url), session, pool).open(request())
    assert info.value.status_code == 503
    assert "redirect to https://elsewhere.example" in info.value.message
    assert info.value.code == "upstream_redirect"
    await pool.close()


async def test_an_upstream_error_keeps_its_words_and_retry_after(session: aiohttp.ClientSession) -> None:
    async def chat(r: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"message": "slow down"}}, status=429,
                                 headers={"Retry-After": "7"})

    pool = HTTPPool()
    async with upstream(chat) as url:
        with pytest.raises(UpstreamError) as info:
            await OpenAIBackend(Deployment("openai", "up", url), session, pool).open(request())
    assert info.value.status_code == 429 and info.value.retry_after == 7
    assert "slow down" in info.value.message
    await pool.close()


async def test_a_stream_that_breaks_off_is_an_error_and_its_connection_is_dropped(session: aiohttp.ClientSession) -> None:
    async def chat(r: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(r)
        chunk = {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        assert r.transport is not None
        r.transport.close()  # the upstream dies mid-stream
        return response

    pool = HTTPPool()
    async with upstream(chat) as url:
        got: list[Delta] = []
        async with await OpenAIBackend(Deployment("openai", "up", url), session, pool).open(
                request(stream=True)) as deltas:
            with pytest.raises(UpstreamError, match="mid-stream|before it finished"):
                async for d in deltas:
                    got.append(d)
    assert [d.content for d in got] == ["Hel"]
    assert pool.idle_connections == 0
    await pool.close()


async def test_a_finished_stream_gives_its_connection_back(session: aiohttp.ClientSession) -> None:
    async def chat(r: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(r)
        for piece in ("Hel", "lo"):
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 2}}
        await response.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response

    pool = HTTPPool()
    async with upstream(chat) as url:
        backend = OpenAIBackend(Deployment("openai", "up", url), session, pool)
        for _ in range(2):
            deltas = await collect(await backend.open(request(stream=True)))
            assert "".join(d.content or "" for d in deltas) == "Hello"
            assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 2
        for _ in range(20):  # the chunked body's end may be read in the background
            if pool.idle_connections == 1:
                break
            await asyncio.sleep(0.01)
        assert pool.idle_connections == 1
    await pool.close()


class BrokenAfterSending:
    """A transport (the seam) whose connection breaks once the request went out, or
    before anything was sent."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.posts = 0

    def endpoint(self, url: str, headers: Any) -> BrokenAfterSending:
        return self

    async def post(self, body: bytes, *, connect_timeout: float, read_timeout: float) -> Any:
        self.posts += 1
        raise self.error

    async def close(self) -> None:
        return None


async def test_a_request_the_upstream_may_have_received_is_not_retryable(
    session: aiohttp.ClientSession,
) -> None:
    from kathan.backends.transport import UpstreamConnectError, UpstreamMaybeReceivedError

    deployment = Deployment(backend="openai", model="up", base_url="http://127.0.0.1:9/v1")
    sent = BrokenAfterSending(UpstreamMaybeReceivedError("reset after the request"))
    with pytest.raises(UpstreamError) as lost:
        await OpenAIBackend(deployment, session, sent).open(request())
    assert (lost.value.code, lost.value.retryable, lost.value.status_code) == (
        "upstream_connection_lost", False, 503)
    unsent = BrokenAfterSending(UpstreamConnectError("refused"))
    with pytest.raises(UpstreamError) as unreachable:
        await OpenAIBackend(deployment, session, unsent).open(request())
    assert (unreachable.value.code, unreachable.value.retryable) == ("upstream_unreachable", True)
    assert sent.posts == unsent.posts == 1


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
@pytest.mark.parametrize("stream", [True, False])
async def test_the_upstreams_reasoning_becomes_reasoning_deltas(
    session: aiohttp.ClientSession, field: str, stream: bool
) -> None:
    script = openai_fake.Script(api_key="sk-up", reasoning="Two and two make four.",
                                reasoning_field=field, reply="Four.")
    pool = HTTPPool()
    async with openai_fake.serve(script) as url:
        backend = OpenAIBackend(Deployment("openai", "up", url, api_key="sk-up"), session,
                                pool)
        history = [{"role": "user", "content": "2+2?"},
                   {"role": "assistant", "content": "4", "reasoning_content": "Easy."},
                   {"role": "user", "content": "Again?"}]
        deltas = await collect(await backend.open(request(messages=history, stream=stream)))
    await pool.close()
    assert "".join(d.reasoning or "" for d in deltas) == "Two and two make four."
    assert "".join(d.content or "" for d in deltas) == "Four."
    assert not any(d.reasoning and d.content for d in deltas)
    assert deltas[-1].usage is not None
    assert (deltas[-1].usage.completion_tokens, deltas[-1].usage.reasoning_tokens) == (6, 5)
    # An earlier turn's reasoning is not sent back.
    assert [set(m) for m in script.requests[0]["messages"]] == [
        {"role", "content"}, {"role", "content"}, {"role", "content"}]
