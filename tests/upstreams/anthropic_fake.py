"""A strict fake of Anthropic's Messages API (``POST /v1/messages``), for tests.

>>> app = make_app(api_key="sk-ant-test")
>>> async with serve(app) as base_url:          # http://127.0.0.1:<free port>
...     ...                                      # send requests to f"{base_url}/v1/messages"
>>> app[STATE].requests                          # the bodies it accepted

It checks a request the way the real API does and answers malformed ones in
Anthropic's error shape (``{"type": "error", "error": {"type", "message"}}``):
401 ``authentication_error`` for a missing or wrong ``x-api-key``, 400
``invalid_request_error`` for a missing ``anthropic-version``, unknown
top-level fields, missing ``model``/``max_tokens``/``messages``, unknown or
malformed content blocks, a ``tool_result`` that answers no ``tool_use`` of the
previous assistant turn (or a ``tool_use`` left unanswered), bad ``tools`` and
``tool_choice`` shapes, sampling parameters out of range and thinking that
breaks its rules. It is stricter than the real API in one way: consecutive
turns of one role are refused, where Anthropic now merges them.

A valid request is answered by replaying a recording from ``recordings/``
(Anthropic's documentation examples, adapted), chosen by this rule:
``Script.recording`` when set; else ``anthropic_thinking.sse`` when thinking is
enabled; else ``anthropic_tool_use.sse`` when ``tools`` are given and
``tool_choice`` is not ``none``; else ``anthropic_text.sse``. The replay carries
the request's model name, and the call is named after the tool that
``tool_choice`` forces, else ``get_weather`` when that tool is offered, else
the first tool. A request without ``"stream": true`` gets the same reply as
one ``Message`` object.

``Script`` makes it misbehave for fault tests. The fake imports nothing from
Kathan.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

RECORDINGS = Path(__file__).parent / "recordings"
VERSIONS = frozenset({"2023-06-01", "2023-01-01"})

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_TOP_LEVEL = frozenset({
    "model", "max_tokens", "messages", "stream", "system", "metadata", "stop_sequences",
    "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
    "cache_control", "container", "inference_geo", "output_config",
})
_BLOCK_KEYS = {
    "text": ({"type", "text"}, {"cache_control", "citations"}),
    "image": ({"type", "source"}, {"cache_control"}),
    "tool_use": ({"type", "id", "name", "input"}, {"cache_control"}),
    "tool_result": ({"type", "tool_use_id"}, {"content", "is_error", "cache_control"}),
    "thinking": ({"type", "thinking", "signature"}, set()),
    "redacted_thinking": ({"type", "data"}, set()),
}
_ROLE_BLOCKS = {
    "user": {"text", "image", "tool_result"},
    "assistant": {"text", "tool_use", "thinking", "redacted_thinking"},
}
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Script:
    """How the fake misbehaves; the default is a well-behaved API.

    - ``status``: answer every valid-looking request with this HTTP status and
      Anthropic's error body for it (``message`` as its text), after the key check.
    - ``retry_after``: a ``retry-after`` header (seconds) on that error.
    - ``delay``: seconds to wait before answering at all.
    - ``die_after``: close the connection after this many events of the stream.
    - ``error_after``: after this many events, send an ``error`` event
      (``overloaded_error``) and end the stream, as Anthropic does.
    - ``stall_after``: after this many events, send only ``ping`` every 20 ms
      until the client leaves.
    - ``event_delay``: seconds between two events.
    - ``recording``: the recording to replay (a file name in ``recordings/``
      without ``.sse``), whatever the request.
    """

    status: int | None = None
    message: str = "Scripted failure"
    retry_after: int | None = None
    delay: float = 0.0
    die_after: int | None = None
    error_after: int | None = None
    stall_after: int | None = None
    event_delay: float = 0.0
    recording: str | None = None


@dataclass(slots=True)
class FakeState:
    """What the fake was told and what it saw. ``script`` may be replaced between requests."""

    api_key: str
    script: Script
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    counted: list[tuple[dict[str, Any], int]] = field(default_factory=list)  # body, answer
    disconnects: int = 0
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


STATE = web.AppKey("anthropic_fake_state", FakeState)


class _Invalid(Exception):
    """A request the real API would refuse with a 400."""


def make_app(*, api_key: str, script: Script | None = None) -> web.Application:
    """The fake as an aiohttp application; its ``FakeState`` is ``app[STATE]``."""
    app = web.Application()
    app[STATE] = FakeState(api_key=api_key, script=script or Script())
    app.router.add_post("/v1/messages", _messages_endpoint)
    app.router.add_post("/v1/messages/count_tokens", _count_endpoint)
    return app


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on a free port of 127.0.0.1 and yield its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def error_response(status: int, message: str, *, retry_after: int | None = None) -> web.Response:
    """An answer in Anthropic's error shape."""
    request_id = f"req_{uuid.uuid4().hex[:24]}"
    body = {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": request_id,
    }
    headers = {"request-id": request_id}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return web.json_response(body, status=status, headers=headers)


async def _messages_endpoint(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    script = state.script
    if script.delay:
        await asyncio.sleep(script.delay)
    if request.headers.get("x-api-key") != state.api_key:
        return error_response(401, "invalid x-api-key")
    if "anthropic-version" not in request.headers:
        return error_response(400, "anthropic-version: header is required")
    if request.headers["anthropic-version"] not in VERSIONS:
        return error_response(
            400, f"anthropic-version: unknown version '{request.headers['anthropic-version']}'"
        )
    if script.status is not None:
        return error_response(script.status, script.message, retry_after=script.retry_after)
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return error_response(400, "The request body is not valid JSON.")
    try:
        validate(body)
    except _Invalid as exc:
        return error_response(400, str(exc))
    state.requests.append(body)
    state.headers.append(dict(request.headers))
    events = _reply(body, script)
    if not body.get("stream"):
        return web.json_response(_as_message(events), headers={"request-id": "req_fake"})
    return await _stream(request, state, script, events)


async def _stream(
    request: web.Request, state: FakeState, script: Script, events: list[tuple[str, str]]
) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "request-id": f"req_{uuid.uuid4().hex[:24]}",
    })
    await response.prepare(request)
    try:
        for n, (name, data) in enumerate(events):
            if n == script.die_after:
                assert request.transport is not None
                request.transport.close()  # what was written goes out, then the socket closes
                return response
            if n == script.error_after:
                error = {"type": "error",
                         "error": {"type": "overloaded_error", "message": "Overloaded"}}
                await response.write(_frame("error", json.dumps(error)))
                break
            if n == script.stall_after:
                while True:
                    await response.write(_frame("ping", '{"type": "ping"}'))
                    await asyncio.sleep(0.02)
            await response.write(_frame(name, data))
            if script.event_delay:
                await asyncio.sleep(script.event_delay)
        await response.write_eof()
    except ConnectionResetError:  # the client left: a write found the socket closed
        state.disconnects += 1
        state.disconnected.set()
    except asyncio.CancelledError:
        state.disconnects += 1
        state.disconnected.set()
        raise
    return response


def _frame(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


# ---------------------------------------------------------------------------
# The reply


def load_recording(name: str) -> list[tuple[str, str]]:
    """A recording's events as ``(event name, data)`` pairs."""
    events: list[tuple[str, str]] = []
    for frame in (RECORDINGS / f"{name}.sse").read_text().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.strip().splitlines())
        if lines:
            events.append((lines["event"], lines["data"]))
    return events


def _reply(body: dict[str, Any], script: Script) -> list[tuple[str, str]]:
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {"type": "auto"}
    name = script.recording
    if name is None:
        if (body.get("thinking") or {}).get("type") == "enabled":
            name = "anthropic_thinking"
        elif tools and choice["type"] != "none":
            name = "anthropic_tool_use"
        else:
            name = "anthropic_text"
    names = [tool["name"] for tool in tools]
    tool_name = choice.get("name") or ("get_weather" if "get_weather" in names or not names
                                       else names[0])
    events = []
    for event, data in load_recording(name):
        payload = json.loads(data)
        if payload["type"] == "message_start":
            payload["message"]["model"] = body["model"]
        block = payload.get("content_block") or {}
        if block.get("type") == "tool_use":
            block["name"] = tool_name
        events.append((event, json.dumps(payload)))
    return events


def _as_message(events: list[tuple[str, str]]) -> dict[str, Any]:
    """The non-streaming ``Message`` the events add up to."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for _, data in events:
        payload = json.loads(data)
        kind = payload["type"]
        if kind == "message_start":
            message = payload["message"]
        elif kind == "content_block_start":
            message["content"].append(payload["content_block"])
        elif kind == "content_block_delta":
            block, delta = message["content"][payload["index"]], payload["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                partial[payload["index"]] = partial.get(payload["index"], "") + delta[
                    "partial_json"]
        elif kind == "content_block_stop" and payload["index"] in partial:
            message["content"][payload["index"]]["input"] = json.loads(partial[payload["index"]])
        elif kind == "message_delta":
            message.update(payload["delta"])
            message["usage"].update(payload["usage"])
    return message


# ---------------------------------------------------------------------------
# Validation


_COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking"})


async def _count_endpoint(request: web.Request) -> web.Response:
    """``POST /v1/messages/count_tokens``: the same checks as a message (without
    ``max_tokens``, which it does not take); the count is the number of characters of
    the messages' and system's JSON over four, a stand-in for a tokenizer."""
    state = request.app[STATE]
    if request.headers.get("x-api-key") != state.api_key:
        return error_response(401, "invalid x-api-key")
    if request.headers.get("anthropic-version") not in VERSIONS:
        return error_response(400, "anthropic-version: header is required")
    if state.script.status is not None:
        return error_response(state.script.status, state.script.message,
                              retry_after=state.script.retry_after)
    try:
        body = json.loads(await request.read())
        if not isinstance(body, dict):
            raise _Invalid("The request body must be a JSON object.")
        for key in body:
            if key not in _COUNT_FIELDS:
                raise _Invalid(f"{key}: Extra inputs are not permitted")
        validate({**body, "max_tokens": 1})
    except (json.JSONDecodeError, UnicodeDecodeError):
        return error_response(400, "The request body is not valid JSON.")
    except _Invalid as exc:
        return error_response(400, str(exc))
    count = len(json.dumps([body.get("system"), body["messages"]])) // 4
    state.counted.append((body, count))
    return web.json_response({"input_tokens": count})


def validate(body: Any) -> None:
    """Raise ``_Invalid`` with the real API's kind of message for a malformed body."""
    if not isinstance(body, dict):
        raise _Invalid("The request body must be a JSON object.")
    for key in body:
        if key not in _TOP_LEVEL:
            raise _Invalid(f"{key}: Extra inputs are not permitted")
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            raise _Invalid(f"{key}: Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise _Invalid("model: Input should be a non-empty string")
    max_tokens = body["max_tokens"]
    if not _is_int(max_tokens) or max_tokens < 1:
        raise _Invalid("max_tokens: Input should be an integer greater than or equal to 1")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _Invalid("stream: Input should be a valid boolean")
    _check_sampling(body)
    _check_system(body.get("system"))
    if "metadata" in body:
        metadata = body["metadata"]
        if not isinstance(metadata, dict) or set(metadata) - {"user_id"}:
            raise _Invalid("metadata: only 'user_id' is permitted")
        if not isinstance(metadata.get("user_id"), str | None):
            raise _Invalid("metadata.user_id: Input should be a valid string")
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _Invalid("stop_sequences: Input should be a valid list of strings")
    names = _check_tools(body.get("tools"))
    _check_tool_choice(body.get("tool_choice"), names)
    _check_messages(body["messages"])
    _check_thinking(body)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_sampling(body: dict[str, Any]) -> None:
    for key in ("temperature", "top_p"):
        if key in body and not (_is_number(body[key]) and 0 <= body[key] <= 1):
            raise _Invalid(f"{key}: Input should be a number between 0 and 1")
    if "top_k" in body and not (_is_int(body["top_k"]) and body["top_k"] >= 0):
        raise _Invalid("top_k: Input should be an integer greater than or equal to 0")


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _Invalid("system: Input should be a valid string or list of text blocks")
    for j, block in enumerate(system):
        _check_block(f"system.{j}", block, {"text"})


def _check_tools(tools: Any) -> set[str]:
    if tools is None:
        return set()
    if not isinstance(tools, list):
        raise _Invalid("tools: Input should be a valid list")
    names: set[str] = set()
    for k, tool in enumerate(tools):
        where = f"tools.{k}"
        if not isinstance(tool, dict):
            raise _Invalid(f"{where}: Input should be an object")
        extra = set(tool) - {"name", "description", "input_schema", "cache_control", "type"}
        if extra:
            raise _Invalid(f"{where}.{min(extra)}: Extra inputs are not permitted")
        if tool.get("type", "custom") != "custom":
            raise _Invalid(f"{where}.type: unknown tool type")
        name = tool.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            raise _Invalid(f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if name in names:
            raise _Invalid(f"tools: Tool names must be unique ('{name}')")
        names.add(name)
        if "description" in tool and not isinstance(tool["description"], str):
            raise _Invalid(f"{where}.description: Input should be a valid string")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _Invalid(f"{where}.input_schema: Field required")
        if schema.get("type") != "object":
            raise _Invalid(f"{where}.input_schema.type: Input should be 'object'")
    return names


def _check_tool_choice(choice: Any, names: set[str]) -> None:
    if choice is None:
        return
    keys = {"auto": {"type", "disable_parallel_tool_use"},
            "any": {"type", "disable_parallel_tool_use"},
            "tool": {"type", "name", "disable_parallel_tool_use"},
            "none": {"type"}}
    if not isinstance(choice, dict) or choice.get("type") not in keys:
        raise _Invalid(
            "tool_choice: Input tag found using 'type' does not match any of the expected "
            "tags: 'auto', 'any', 'tool', 'none'"
        )
    extra = set(choice) - keys[choice["type"]]
    if extra:
        raise _Invalid(f"tool_choice.{min(extra)}: Extra inputs are not permitted")
    if not isinstance(choice.get("disable_parallel_tool_use", False), bool):
        raise _Invalid("tool_choice.disable_parallel_tool_use: Input should be a valid boolean")
    if choice["type"] in ("any", "tool") and not names:
        raise _Invalid("tool_choice: may only be specified while providing tools")
    if choice["type"] == "tool":
        if not isinstance(choice.get("name"), str):
            raise _Invalid("tool_choice.name: Field required")
        if choice["name"] not in names:
            raise _Invalid(f"tool_choice.name: no tool named '{choice['name']}'")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _Invalid("messages: at least one message is required")
    previous: str | None = None
    calls: set[str] = set()  # tool_use ids of the previous assistant turn
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _Invalid(f"{where}: Input should be an object")
        extra = set(message) - {"role", "content"}
        if extra:
            raise _Invalid(f"{where}.{min(extra)}: Extra inputs are not permitted")
        role = message.get("role")
        if role not in _ROLE_BLOCKS:
            raise _Invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise _Invalid('messages: first message must use the "user" role')
        if role == previous:
            raise _Invalid(
                'messages: roles must alternate between "user" and "assistant", but found '
                f'multiple "{role}" roles in a row'
            )
        final = i == len(messages) - 1
        blocks = _check_content(where, role, message.get("content"), final=final)
        if role == "assistant":
            ids = [b["id"] for b in blocks if b["type"] == "tool_use"]
            if len(ids) != len(set(ids)):
                raise _Invalid(f"{where}: `tool_use` ids must be unique")
            calls = set(ids)
        else:
            _check_results(i, blocks, calls)
            calls = set()
        previous = role


def _check_results(i: int, blocks: list[dict[str, Any]], calls: set[str]) -> None:
    answered: set[str] = set()
    text_seen = False
    for j, block in enumerate(blocks):
        if block["type"] != "tool_result":
            text_seen = True
            continue
        if text_seen:
            raise _Invalid(
                f"messages.{i}.content.{j}: tool_result blocks must come first in the "
                "content of a user message"
            )
        if block["tool_use_id"] not in calls:
            raise _Invalid(
                f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                f"blocks: {block['tool_use_id']}. Each `tool_result` block must have a "
                "corresponding `tool_use` block in the previous message."
            )
        answered.add(block["tool_use_id"])
    if calls - answered:
        raise _Invalid(
            f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
            f"immediately after: {', '.join(sorted(calls - answered))}. Each `tool_use` block "
            "must have a corresponding `tool_result` block in the next message."
        )


def _check_content(where: str, role: str, content: Any, *, final: bool) -> list[dict[str, Any]]:
    prefill = final and role == "assistant"
    if isinstance(content, str):
        blocks = [{"type": "text", "text": content}] if content else []
    elif isinstance(content, list):
        blocks = content
        for j, block in enumerate(blocks):
            _check_block(f"{where}.content.{j}", block, _ROLE_BLOCKS[role])
    else:
        raise _Invalid(f"{where}.content: Field required")
    if not blocks and not prefill:
        raise _Invalid(
            f"{where}: all messages must have non-empty content except for the optional "
            "final assistant message"
        )
    last = blocks[-1] if blocks else {}
    if prefill and last.get("type") == "text" and last["text"] != last["text"].rstrip():
        raise _Invalid("final assistant content cannot end with trailing whitespace")
    return blocks


def _check_block(where: str, block: Any, allowed: set[str]) -> None:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind not in _BLOCK_KEYS:
        raise _Invalid(
            f"{where}: Input tag '{kind}' found using 'type' does not match any of the "
            f"expected tags: {', '.join(repr(k) for k in sorted(allowed))}"
        )
    assert isinstance(block, dict)
    if kind not in allowed:
        raise _Invalid(f"{where}.type: a {kind} block is not allowed here")
    required, optional = _BLOCK_KEYS[kind]
    if missing := sorted(required - set(block)):
        raise _Invalid(f"{where}.{missing[0]}: Field required")
    if extra := sorted(set(block) - required - optional):
        raise _Invalid(f"{where}.{extra[0]}: Extra inputs are not permitted")
    if kind == "text" and (not isinstance(block["text"], str) or not block["text"]):
        raise _Invalid(f"{where}.text: text content blocks must be non-empty")
    elif kind == "image":
        _check_image(where, block["source"])
    elif kind == "tool_use":
        if not isinstance(block["id"], str) or not _TOOL_ID.fullmatch(block["id"]):
            raise _Invalid(f"{where}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        if not isinstance(block["name"], str) or not block["name"]:
            raise _Invalid(f"{where}.name: Input should be a non-empty string")
        if not isinstance(block["input"], dict):
            raise _Invalid(f"{where}.input: Input should be a valid dictionary")
    elif kind == "tool_result":
        if not isinstance(block["tool_use_id"], str):
            raise _Invalid(f"{where}.tool_use_id: Input should be a valid string")
        content = block.get("content", "")
        if isinstance(content, list):
            for k, part in enumerate(content):
                _check_block(f"{where}.content.{k}", part, {"text", "image"})
        elif not isinstance(content, str):
            raise _Invalid(f"{where}.content: Input should be a string or a list of blocks")


def _check_image(where: str, source: Any) -> None:
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "url":
        assert isinstance(source, dict)
        if set(source) != {"type", "url"} or not str(source["url"]).startswith(
            ("http://", "https://")
        ):
            raise _Invalid(f"{where}.source: a url source needs an http(s) 'url' only")
    elif kind == "base64":
        assert isinstance(source, dict)
        if set(source) != {"type", "media_type", "data"}:
            raise _Invalid(f"{where}.source: a base64 source needs 'media_type' and 'data'")
        if source["media_type"] not in _IMAGE_TYPES:
            raise _Invalid(
                f"{where}.source.media_type: Input should be 'image/jpeg', 'image/png', "
                "'image/gif' or 'image/webp'"
            )
        try:
            base64.b64decode(source["data"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise _Invalid(f"{where}.source.data: invalid base64 data") from None
    else:
        raise _Invalid(f"{where}.source.type: Input should be 'base64' or 'url'")


def _check_thinking(body: dict[str, Any]) -> None:
    thinking = body.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
        raise _Invalid("thinking.type: Input should be 'enabled' or 'disabled'")
    if thinking["type"] == "disabled":
        if set(thinking) != {"type"}:
            raise _Invalid("thinking: a disabled thinking takes no other field")
        return
    if set(thinking) != {"type", "budget_tokens"} or not _is_int(thinking["budget_tokens"]):
        raise _Invalid("thinking.budget_tokens: Field required")
    budget: int = thinking["budget_tokens"]
    if budget < 1024:
        raise _Invalid("thinking.budget_tokens: Input should be greater than or equal to 1024")
    if budget >= body["max_tokens"]:
        raise _Invalid("`max_tokens` must be greater than `thinking.budget_tokens`")
    if body.get("temperature", 1) != 1:
        raise _Invalid("`temperature` may only be set to 1 when thinking is enabled")
    if "top_k" in body:
        raise _Invalid("`top_k` may not be set when thinking is enabled")
    if body.get("top_p", 1) < 0.95:
        raise _Invalid("`top_p` must be greater than or equal to 0.95 when thinking is enabled")
    if (body.get("tool_choice") or {}).get("type", "auto") not in ("auto", "none"):
        raise _Invalid("Thinking may not be enabled when tool_choice forces tool use.")
    assistant = [m for m in body["messages"] if m["role"] == "assistant"]
    if assistant:
        blocks = assistant[-1]["content"]
        blocks = [{"type": "text"}] if isinstance(blocks, str) else blocks
        final = body["messages"][-1]["role"] == "assistant"
        uses_tools = any(b["type"] == "tool_use" for b in blocks)
        if (final or uses_tools) and (not blocks or blocks[0]["type"] not in (
            "thinking", "redacted_thinking"
        )):
            raise _Invalid(
                "When `thinking` is enabled, a final `assistant` message must start with a "
                "thinking block (preceeding the lastmost set of `tool_use` and `tool_result` "
                "blocks). To avoid this requirement, disable `thinking`."
            )
