"""A scriptable OpenAI-compatible upstream for fault tests (aiohttp, no kathan imports).

It answers ``POST /v1/chat/completions`` by streaming a fixed reply in
OpenAI's chunk format (a call of a tool when ``tools`` are given and
``tool_choice`` is not ``none``: the one ``tool_choice`` names, else
``get_weather`` when offered, else the first, with ``Script.tool_arguments``;
like OpenAI it refuses a ``tool`` message that answers no call of the assistant
message before it, and calls left unanswered), ``POST /v1/completions`` (legacy ``text_completion``s,
streamed or not, with echo, n, several prompts and legacy logprobs),
``POST /v1/embeddings`` (a deterministic unit vector per input, as floats or
base64; one token per word, or per id) and ``GET /v1/models``. Like OpenAI it
refuses unknown fields and malformed values with a 400. A ``Script`` decides how
it misbehaves: fail the next N requests with a status, wait before answering, die
after N chunks, or send an error event after N chunks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Script:
    reply: str = "Hello from the fake upstream."
    # Reasoning before the reply, as DeepSeek's reasoner and vLLM send it
    # (``reasoning_content``, one word a chunk; counted in
    # ``completion_tokens_details.reasoning_tokens``), or as OpenRouter and Groq name it
    # (``reasoning_field``: ``reasoning``).
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"
    tool_arguments: str = '{"location": "Paris"}'  # the arguments of a tool call it makes
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
           usage: dict[str, Any] | None = None) -> bytes:
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
        if (unanswered := _unanswered_tool_message(body["messages"])) is not None:
            return _error(400, unanswered)
        model = str(body.get("model"))
        words = script.reply.split(" ")
        tool = _called_tool(body)
        arguments = script.tool_arguments
        # A call's output tokens: one per argument piece streamed, as words are for text.
        pieces = [arguments[k:k + 8] for k in range(0, len(arguments), 8)]
        thoughts = script.reasoning.split(" ") if script.reasoning else []
        output = (len(pieces) if tool else len(words)) + len(thoughts)
        usage: dict[str, Any] = {"prompt_tokens": 7, "completion_tokens": output,
                                 "total_tokens": 7 + output}
        if thoughts:
            usage["completion_tokens_details"] = {"reasoning_tokens": len(thoughts)}
        finish = "tool_calls" if tool else "stop"
        call = {"id": TOOL_CALL_ID, "type": "function",
                "function": {"name": tool, "arguments": arguments}}
        if not body.get("stream"):
            message = ({"role": "assistant", "content": None, "tool_calls": [call]} if tool
                       else {"role": "assistant", "content": script.reply})
            if script.reasoning:
                message[script.reasoning_field] = script.reasoning
            return web.json_response({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 1,
                "model": model,
                "choices": [{"index": 0, "finish_reason": finish, "message": message}],
                "usage": usage,
            })
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        thinking = [_chunk(model, {"role": "assistant", "content": None,
                                   script.reasoning_field: (" " if i else "") + w})
                    for i, w in enumerate(thoughts)]
        if tool:
            chunks = [_chunk(model, {"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, **call, "function": {"name": tool, "arguments": ""}}]})]
            chunks += [_chunk(model, {"tool_calls": [
                {"index": 0, "function": {"arguments": piece}}]}) for piece in pieces]
        else:
            chunks = [_chunk(model, {"role": "assistant", "content": ""})]
            chunks += [_chunk(model, {"content": (" " if i else "") + w})
                       for i, w in enumerate(words)]
        chunks = thinking + chunks
        chunks.append(_chunk(model, {}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(_chunk(model, {}, usage=usage))
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

    def refusal(request: web.Request) -> web.Response | None:
        """The key check, then a scripted failure."""
        if request.headers.get("Authorization") != f"Bearer {script.api_key}":
            return _error(401, "Incorrect API key provided")
        if script.fail_next > 0:
            script.fail_next -= 1
            headers = {"Retry-After": str(script.retry_after)} if script.retry_after else {}
            return _error(script.fail_status, "upstream trouble", headers=headers)
        return None

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        script.requests.append(body)
        if (refused := refusal(request)) is not None:
            return refused
        try:
            inputs = _embedding_inputs(body)
        except BadRequest as exc:
            return _error(400, str(exc))
        size = body.get("dimensions") or EMBEDDING_DIMENSIONS
        data = []
        for i, given in enumerate(inputs):
            vector = fake_vector(given, size)
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        tokens = sum(len(g) if isinstance(g, list) else len(g.split()) for g in inputs)
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        script.requests.append(body)
        if (refused := refusal(request)) is not None:
            return refused
        unknown = set(body) - _COMPLETION_FIELDS
        if unknown:
            return _error(400, f"Unrecognized request argument supplied: {min(unknown)}")
        prompt = body.get("prompt")
        if prompt is None or prompt == [] or "model" not in body:
            return _error(400, "you must provide a model and a prompt")
        if body.get("stream_options") and not body.get("stream"):
            return _error(400, "stream_options is only allowed when stream is true")
        prompts = [prompt] if isinstance(prompt, str) or isinstance(prompt[0], int) else prompt
        model, n = str(body["model"]), int(body.get("n") or 1)
        words = script.reply.split(" ")[:int(body.get("max_tokens") or 16)]
        finish = "stop" if len(words) == len(script.reply.split(" ")) else "length"
        choices = []
        for p, given in enumerate(prompts):
            echo = (given if isinstance(given, str) else "") if body.get("echo") else ""
            pieces = [(" " if i or echo else "") + w for i, w in enumerate(words)]
            choices += [(p * n + c, echo, pieces) for c in range(n)]
        usage = {"prompt_tokens": 3 * len(prompts), "completion_tokens": len(words) * n
                 * len(prompts), "total_tokens": 3 * len(prompts) + len(words) * n * len(prompts)}
        top = body.get("logprobs")

        def logprobs(pieces: list[str], offset: int) -> dict[str, Any] | None:
            if top is None:
                return None
            values = [-0.25 * (k + 1) for k in range(len(pieces))]
            return {"tokens": pieces, "token_logprobs": values,
                    "top_logprobs": [{t: v, "zz": v - 1.0} for t, v in zip(pieces, values)],
                    "text_offset": [offset + sum(len(x) for x in pieces[:k])
                                    for k in range(len(pieces))]}

        base = {"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": model}
        if not body.get("stream"):
            return web.json_response({**base, "usage": usage, "choices": [
                {"index": i, "text": echo + "".join(pieces), "finish_reason": finish,
                 "logprobs": logprobs(pieces, len(echo))} for i, echo, pieces in choices]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(chunk: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps({**base, **chunk})}\n\n".encode())

        for i, echo, pieces in choices:
            if echo:
                await send({"choices": [{"index": i, "text": echo, "finish_reason": None,
                                         "logprobs": None}]})
            for k, piece in enumerate(pieces):
                offset = len(echo) + sum(len(x) for x in pieces[:k])
                await send({"choices": [{"index": i, "text": piece, "finish_reason": None,
                                         "logprobs": logprobs([piece], offset)}]})
            await send({"choices": [{"index": i, "text": "", "finish_reason": finish,
                                     "logprobs": None}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({"choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    return app


EMBEDDING_DIMENSIONS = 8
_EMBEDDING_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}
_COMPLETION_FIELDS = {
    "model", "prompt", "suffix", "max_tokens", "temperature", "top_p", "n", "stream",
    "stream_options", "logprobs", "echo", "stop", "presence_penalty", "frequency_penalty",
    "best_of", "logit_bias", "user", "seed", "top_k", "min_p", "repetition_penalty",
}


TOOL_CALL_ID = "call_fake_1"


def _called_tool(body: dict[str, Any]) -> str | None:
    """The tool a chat request gets a call of: none without ``tools`` or with
    ``tool_choice: none``; else the one ``tool_choice`` names, else ``get_weather`` when
    offered, else the first."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        return str(choice["function"]["name"])
    names = [str(t["function"]["name"]) for t in tools]
    return "get_weather" if "get_weather" in names else names[0]


def _unanswered_tool_message(messages: list[dict[str, Any]]) -> str | None:
    """OpenAI's 400 message for tool messages that do not answer the calls of the
    assistant message just before them, one each; None when they do."""
    calls: set[str] = set()  # the calls of the last assistant message, still unanswered
    for message in [*messages, {"role": "user"}]:
        if message.get("role") == "tool":
            if message.get("tool_call_id") not in calls:
                return ("Invalid parameter: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'.")
            calls.discard(message["tool_call_id"])
            continue
        if calls:
            return ("An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not "
                    f"have response messages: {', '.join(sorted(calls))}")
        if message.get("role") == "assistant":
            calls = {c["id"] for c in message.get("tool_calls") or ()}
    return None


class BadRequest(Exception):
    """A request OpenAI would refuse with 400 (the message is its words)."""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return web.json_response({"error": {"message": message, "type": kind, "param": None,
                                        "code": None}}, status=status, headers=headers)


def _embedding_inputs(body: dict[str, Any]) -> list[str | list[int]]:
    """The inputs of an embeddings request, checked as OpenAI checks them."""
    unknown = set(body) - _EMBEDDING_FIELDS
    if unknown:
        raise BadRequest(f"Unrecognized request argument supplied: {min(unknown)}")
    if not isinstance(body.get("model"), str):
        raise BadRequest("you must provide a model parameter")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'")
    size = body.get("dimensions")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise BadRequest("'dimensions' must be a positive integer")
    given = body.get("input")
    one_list = isinstance(given, list) and given and all(isinstance(t, int) for t in given)
    if isinstance(given, str) or one_list:
        given = [given]  # one input: a text, or token ids
    if not isinstance(given, list) or not given or any(
            not g or not isinstance(g, str | list) for g in given):
        raise BadRequest("'$.input' is invalid: an input is empty or of the wrong type")
    return given


def fake_vector(given: str | list[int], size: int) -> list[float]:
    """The fake's embedding of an input: ``size`` numbers from its hash, unit length."""
    digest = hashlib.sha256(json.dumps(given).encode()).digest() * (size // 32 + 1)
    values = [b - 127.5 for b in digest[:size]]
    norm = sum(v * v for v in values) ** 0.5
    return [v / norm for v in values]


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
