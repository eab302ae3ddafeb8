"""A scriptable OpenAI-compatible upstream for fault tests (aiohttp, no kathan imports).

It answers ``POST /v1/chat/completions`` by streaming a fixed reply in
OpenAI's chunk format, and ``GET /v1/models``. A ``Script`` decides how it
misbehaves: fail the next N requests with a status, wait before answering,
die after N chunks, or send an error event after N chunks.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Script:
    reply: str = "Hello from the fake upstream."
    fail_next: int = 0  # answer this many requests with ``fail_status``
    fail_status: int = 503
    retry_after: int | None = None
    delay: float = 0.0  # seconds before the status line
    chunk_delay: float = 0.0  # seconds between chunks
    die_after_chunks: int | None = None  # close the connection after this many chunks
    # after this many chunks, an error event (vLLM's shape, code 503) ends the stream
    error_after_chunks: int | None = None
    api_key: str = "sk-upstream"
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnects: int = 0
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    probed: asyncio.Event = field(default_factory=asyncio.Event)  # GET /v1/models came


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None,
           usage: dict[str, int] | None = None) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
        "model": model,
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


def make_app(script: Script) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {script.api_key}":
            return web.json_response({"error": {"message": "Incorrect API key provided",
                                                "type": "invalid_request_error"}}, status=401)
        body = await request.json()
        script.requests.append(body)
        if script.delay:
            # Thinking before the status line; a caller that hangs up meanwhile is counted.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + script.delay
            while loop.time() < deadline:
                if request.transport is None or request.transport.is_closing():
                    script.disconnects += 1
                    return web.Response(status=499)
                await asyncio.sleep(0.01)
        if script.fail_next > 0:
            script.fail_next -= 1
            headers = {"Retry-After": str(script.retry_after)} if script.retry_after else {}
            return web.json_response({"error": {"message": "upstream trouble",
                                                "type": "server_error"}},
                                     status=script.fail_status, headers=headers)
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return web.json_response({"error": {"message": "messages is required",
                                                "type": "invalid_request_error"}}, status=400)
        model = str(body.get("model"))
        words = script.reply.split(" ")
        if not body.get("stream"):
            return web.json_response({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 1,
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": script.reply}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": len(words),
                          "total_tokens": 7 + len(words)},
            })
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunks = [_chunk(model, {"role": "assistant", "content": ""})]
        chunks += [_chunk(model, {"content": (" " if i else "") + w}) for i, w in enumerate(words)]
        chunks.append(_chunk(model, {}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(_chunk(model, {}, usage={"prompt_tokens": 7,
                                                   "completion_tokens": len(words),
                                                   "total_tokens": 7 + len(words)}))
        try:
            for i, chunk in enumerate(chunks):
                if script.die_after_chunks is not None and i == script.die_after_chunks:
                    assert request.transport is not None
                    request.transport.close()  # dies without [DONE]
                    return response
                if i == script.error_after_chunks:
                    error = {"error": {"message": "upstream overloaded", "type": "server_error",
                                       "code": 503}}
                    await response.write(f"data: {json.dumps(error)}\n\n".encode())
                    return response
                await response.write(chunk)
                if script.chunk_delay:
                    await asyncio.sleep(script.chunk_delay)
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            script.disconnects += 1
            script.disconnected.set()
            raise
        return response

    async def models(request: web.Request) -> web.Response:
        script.probed.set()
        return web.json_response({"object": "list", "data": [{"id": "fake-model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


@asynccontextmanager
async def serve(script: Script) -> AsyncIterator[str]:
    """Run the fake on a free local port; yields its base URL (``.../v1``)."""
    runner = web.AppRunner(make_app(script))
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()
