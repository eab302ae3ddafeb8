"""The ``anthropic`` backend: OpenAI chat requests served by Anthropic's Messages API.

A request that came as a Messages request (``/v1/messages``, ``_anthropic``) is sent
as the client sent it (``passed_through``). Otherwise ``to_anthropic`` turns a
``ChatCompletionRequest`` into a Messages API body and
``StreamTranslator`` turns the Messages API's server-sent events back into
``Delta``s. The upstream is always asked to stream: Kathan builds non-streaming
answers by accumulating the deltas.

Where the two APIs differ, this backend does the following:

- ``max_tokens`` is required by Anthropic: 4096 when the request names neither
  ``max_tokens`` nor ``max_completion_tokens``.
- System and developer messages, wherever they stand, become the top-level
  ``system`` string, in order, separated by blank lines.
- Consecutive messages of one role are merged (Anthropic wants alternating
  turns); ``tool``/``function`` results become ``tool_result`` blocks of a user
  turn, placed before any text of that turn. A conversation that opens with an
  assistant message gets a short placeholder user turn in front, because
  Anthropic's first turn must be the user's. Messages' ``name`` is dropped:
  Anthropic has no such field.
- Tool call ids are kept, with any character Anthropic does not allow in an id
  replaced by ``_`` (the same way in the call and its result). The legacy
  ``function_call`` of an assistant message gets the id ``call_legacy_<i>``
  (``i``: the message's index), which the next ``function`` message of that
  name answers.
- ``reasoning_effort`` turns on extended thinking with a token budget
  (``THINKING_BUDGETS``); ``max_tokens`` is raised to budget + 1024 when it is
  smaller. The thinking text comes back as reasoning deltas (a block's
  ``signature`` as a delta of its own, for a Messages client to send the
  block back); Anthropic does not count thinking tokens apart, so they are in
  ``completion_tokens`` and ``reasoning_tokens`` stays 0. Thinking is left off
  where Anthropic needs the signed thinking blocks of the earlier turn, which
  an OpenAI client cannot send back: when the request continues a tool-use
  loop (its last assistant turn called tools) or a final assistant message.
  An assistant message's ``reasoning_content`` is not sent (it has no
  signature).
- Parameters Anthropic lacks (``seed``, ``logprobs``, penalties, ``min_p``,
  ``logit_bias``, ``n`` > 1, JSON response formats) are
  refused with a 400 naming them, unless they hold their no-op value
  (``presence_penalty: 0``, ``n: 1`` ...). ``top_k: 0`` (llama.cpp's "off") is
  not sent.
- Images: ``data:`` URLs are sent as base64, http(s) URLs as URL sources that
  Anthropic fetches; Kathan never fetches them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import aiohttp

from kathan.backends.base import Delta, DeltaStream, TokenUsage, ToolCallDelta
from kathan.backends.relay import ErrorEvent, incomplete, json_object, relay
from kathan.backends.toolcalls import ToolUse, tool_use
from kathan.backends.transport import Response, Transport
from kathan.backends.upstream import (
    Deployment,
    ProviderBackend,
    UpstreamError,
    UpstreamUnavailable,
    body_text,
    refuse_extras,
    refuse_unsupported,
    refused,
    send,
)
from kathan.errors import InvalidRequestError, UnsupportedParameterError
from kathan.protocol.chat import (
    AssistantMessage,
    ChatCompletionRequest,
    ContentPart,
    FunctionMessage,
    ImagePart,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
THINKING_BUDGETS: Final[Mapping[str, int]] = MappingProxyType(
    {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}
)
# Tokens kept for the answer when thinking raises max_tokens.
_ANSWER_RESERVE = 1024
_OPENING_TURN = "(The conversation starts.)"
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(
    r"data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)", re.DOTALL
)
_NOT_IN_ID = re.compile(r"[^a-zA-Z0-9_-]")
_FINISH: Final[Mapping[str, str]] = MappingProxyType({
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
})
# The HTTP status of each of Anthropic's error types (an ``error`` event names only its type).
_ERROR_STATUS: Final[Mapping[str, int]] = MappingProxyType({
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
})


# ---------------------------------------------------------------------------
# Request translation


def to_anthropic(request: ChatCompletionRequest, deployment: Deployment) -> dict[str, Any]:
    """The Messages API body for ``request``; raises ``InvalidRequestError`` for what
    cannot be honoured. It always streams (``"stream": true``); ``max_tokens``, which
    Anthropic requires, defaults to ``DEFAULT_MAX_TOKENS``.
    """
    _check_supported(request)
    use = tool_use(request)
    system, messages = _conversation(request)
    max_tokens = (request.max_completion_tokens or request.max_tokens
                  or deployment.default_max_tokens or DEFAULT_MAX_TOKENS)
    body: dict[str, Any] = {"model": deployment.model, "max_tokens": max_tokens}
    if system:
        body["system"] = system
    body["messages"] = messages
    if request.stop_list:
        body["stop_sequences"] = list(request.stop_list)
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k:
        body["top_k"] = request.top_k
    if use is not None:
        body["tools"] = [_tool(f.name, f.description, f.parameters) for f in use.functions]
        body["tool_choice"] = _tool_choice(use)
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    effort = request.reasoning_effort
    if effort is not None and effort != "none":
        _check_thinking(request, use)  # on every turn, whether or not this one thinks
        if _thinking_allowed(messages):
            budget = THINKING_BUDGETS[effort]
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
            body["max_tokens"] = max(max_tokens, budget + _ANSWER_RESERVE)
    body["stream"] = True
    return body


def passed_through(given: dict[str, Any], request: ChatCompletionRequest,
                   deployment: Deployment) -> dict[str, Any]:
    """A Messages request's own body (``/v1/messages``), as the client sent it, for the
    deployment: its model, streamed, and the ``max_tokens`` Kathan allows it (a key's
    cap may have lowered it)."""
    max_tokens = request.max_completion_tokens or request.max_tokens or given["max_tokens"]
    return {**given, "model": deployment.model, "max_tokens": max_tokens, "stream": True}


def _check_supported(request: ChatCompletionRequest) -> None:
    fmt = request.response_format
    checks: list[tuple[bool, str]] = [
        ((request.n or 1) > 1, "n"),
        (bool(request.logprobs), "logprobs"),
        (request.top_logprobs is not None, "top_logprobs"),
        (bool(request.logit_bias), "logit_bias"),
        (bool(request.presence_penalty), "presence_penalty"),
        (bool(request.frequency_penalty), "frequency_penalty"),
        (request.repetition_penalty not in (None, 1.0), "repetition_penalty"),
        (bool(request.min_p), "min_p"),
        (request.seed is not None, "seed"),
        (fmt is not None and fmt.type != "text", "response_format"),
    ]
    refuse_unsupported(checks, backend="anthropic", model=request.model)
    if request.temperature is not None and request.temperature > 1:
        raise UnsupportedParameterError(
            f"'temperature' {request.temperature} is not supported by the anthropic backend: "
            "Anthropic's range is 0 to 1.", param="temperature",
        )


def _check_thinking(request: ChatCompletionRequest, use: ToolUse | None) -> None:
    """Anthropic's limits on the sampling parameters of a request that thinks."""
    problem: tuple[str, str] | None = None
    if request.temperature not in (None, 1.0):
        problem = "temperature", "'temperature' must be unset or 1"
    elif request.top_k:
        problem = "top_k", "'top_k' must be unset"
    elif request.top_p is not None and request.top_p < 0.95:
        problem = "top_p", "'top_p' must be unset or between 0.95 and 1"
    elif use is not None and use.choice not in ("auto", "none"):
        field = "tool_choice" if use.field == "tools" else "function_call"
        problem = field, f"'{field}' must be auto or none (a call cannot be forced)"
    if problem is not None:
        field, what = problem
        raise InvalidRequestError(
            f"With 'reasoning_effort' the anthropic backend turns on extended thinking, "
            f"and then {what}.", param=field,
        )


def _thinking_allowed(messages: list[dict[str, Any]]) -> bool:
    """Whether Anthropic accepts thinking without the earlier turn's thinking blocks."""
    last = messages[-1]
    if last["role"] == "assistant":
        return False  # a final assistant message to continue
    turns = [m for m in messages if m["role"] == "assistant"]
    return not turns or all(block["type"] != "tool_use" for block in turns[-1]["content"])


def _tool(name: str, description: str | None, parameters: dict[str, Any] | None) -> dict[str, Any]:
    schema = dict(parameters) if parameters else {"type": "object", "properties": {}}
    schema.setdefault("type", "object")
    tool: dict[str, Any] = {"name": name}
    if description:
        tool["description"] = description
    tool["input_schema"] = schema
    return tool


def _tool_choice(use: ToolUse) -> dict[str, Any]:
    if use.choice == "none":
        return {"type": "none"}
    choice: dict[str, Any] = {
        "auto": {"type": "auto"}, "required": {"type": "any"}
    }.get(use.choice) or {"type": "tool", "name": use.choice}
    if not use.parallel:
        choice["disable_parallel_tool_use"] = True
    return choice


def _text(content: str | list[TextPart] | None) -> str:
    if isinstance(content, list):
        return "".join(part.text for part in content)
    return content or ""


def _tool_id(call_id: str) -> str:
    return _NOT_IN_ID.sub("_", call_id) or "_"


@dataclass(slots=True)
class _Call:
    """A call of the last assistant turn, until a result answers it."""

    message: int
    name: str


def _conversation(request: ChatCompletionRequest) -> tuple[str, list[dict[str, Any]]]:
    """The ``system`` text and the alternating ``messages``."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    pending: dict[str, _Call] = {}  # calls of the last assistant turn not yet answered
    for i, message in enumerate(request.messages):
        if isinstance(message, SystemMessage):
            if text := _text(message.content):
                system.append(text)
            continue
        if isinstance(message, AssistantMessage):
            role, blocks = "assistant", _assistant_blocks(i, message)
            if not turns or turns[-1]["role"] != "assistant":
                _check_answered(pending)
                pending.clear()
            for block in blocks:
                if block["type"] == "tool_use":
                    if block["id"] in pending:
                        raise InvalidRequestError(
                            f"messages[{i}] makes two tool calls with the id '{block['id']}'.",
                            param=f"messages[{i}].tool_calls",
                        )
                    pending[block["id"]] = _Call(i, block["name"])
        elif isinstance(message, UserMessage):
            role, blocks = "user", _user_blocks(i, message.content)
        else:
            role, blocks = "user", [_tool_result(i, message, pending)]
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    _check_answered(pending)
    if not turns:
        raise InvalidRequestError(
            "The anthropic backend needs at least one user or assistant message with content.",
            param="messages",
        )
    if turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": _OPENING_TURN}]})
    for turn in turns:
        if turn["role"] == "user":  # results first, as Anthropic requires
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    _trim_final(turns)
    return "\n\n".join(system), turns


def _trim_final(turns: list[dict[str, Any]]) -> None:
    """A final assistant message may not end with whitespace (Anthropic continues it)."""
    last = turns[-1]
    if last["role"] != "assistant" or last["content"][-1]["type"] != "text":
        return
    text = last["content"][-1]["text"].rstrip()
    if text:
        last["content"][-1]["text"] = text
    else:
        last["content"].pop()
        if not last["content"]:
            turns.pop()


def _check_answered(pending: dict[str, _Call]) -> None:
    if pending:
        call_id, call = next(iter(pending.items()))
        raise InvalidRequestError(
            f"messages[{call.message}] calls '{call.name}' (id '{call_id}'), but no tool "
            "message answers it before the next assistant message or the end.",
            param=f"messages[{call.message}].tool_calls",
        )


def _user_blocks(i: int, content: str | list[ContentPart]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if isinstance(part, ImagePart):
            blocks.append(_image(part.image_url.url, f"messages[{i}].content[{j}]"))
        elif part.text:
            blocks.append({"type": "text", "text": part.text})
    return blocks


def _image(url: str, where: str) -> dict[str, Any]:
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise InvalidRequestError(
            f"{where}: an image must be an http(s) URL or a base64 data: URL.",
            param=f"{where}.image_url.url",
        )
    media_type = match["type"].lower().replace("image/jpg", "image/jpeg")
    if media_type not in _IMAGE_TYPES:
        raise InvalidRequestError(
            f"{where}: Anthropic accepts JPEG, PNG, GIF and WebP images, not {media_type}.",
            param=f"{where}.image_url.url",
        )
    source = {"type": "base64", "media_type": media_type, "data": match["data"]}
    return {"type": "image", "source": source}


def _assistant_blocks(i: int, message: AssistantMessage) -> list[dict[str, Any]]:
    text = _text(message.content) or message.refusal or ""
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    calls = [
        (c.id, c.function.name, c.function.arguments, "tool_calls")
        for c in message.tool_calls or ()
    ]
    if message.function_call is not None:
        call = message.function_call
        calls.append((f"call_legacy_{i}", call.name, call.arguments, "function_call"))
    for call_id, name, arguments, field in calls:
        try:
            arguments_ = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            arguments_ = None
        if not isinstance(arguments_, dict):
            raise InvalidRequestError(
                f"messages[{i}]: the arguments of the call to '{name}' must be a JSON object.",
                param=f"messages[{i}].{field}",
            )
        blocks.append({"type": "tool_use", "id": _tool_id(call_id), "name": name,
                       "input": arguments_})
    return blocks


def _tool_result(
    i: int, message: ToolMessage | FunctionMessage, pending: dict[str, _Call]
) -> dict[str, Any]:
    if isinstance(message, ToolMessage):
        call_id = _tool_id(message.tool_call_id)
        if call_id not in pending:
            raise InvalidRequestError(
                f"messages[{i}] answers tool call '{message.tool_call_id}', but the assistant "
                "message before it made no unanswered call with that id.",
                param=f"messages[{i}].tool_call_id",
            )
    else:
        found = [cid for cid, call in pending.items() if call.name == message.name]
        if not found:
            raise InvalidRequestError(
                f"messages[{i}] is the result of function '{message.name}', but the assistant "
                "message before it did not call it.",
                param=f"messages[{i}].name",
            )
        call_id = found[0]
    del pending[call_id]
    result = {"type": "tool_result", "tool_use_id": call_id}
    if text := _text(message.content):
        result["content"] = text
    return result


# ---------------------------------------------------------------------------
# Stream translation


@dataclass(slots=True)
class _Block:
    """One content block of the reply: ``tool`` is its call's index, None for text."""

    kind: str  # "text", "tool_use" or a kind that is not relayed ("thinking" ...)
    tool: int | None = None
    has_arguments: bool = False


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class StreamTranslator:
    """Turns one Messages API event stream into ``Delta``s (all of choice 0).

    >>> t = StreamTranslator()
    >>> t.feed("content_block_start", '{"type": "content_block_start", "index": 0, '
    ...        '"content_block": {"type": "text", "text": ""}}')
    []
    >>> [d.content for d in t.feed("content_block_delta", '{"type": "content_block_delta", '
    ...        '"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}')]
    ['Hi']
    >>> t.done
    False

    Thinking blocks become reasoning deltas, a block's signature a delta of its own
    (``signature``); redacted thinking is dropped; ``error`` events raise ``ErrorEvent``. It is
    ``done`` after ``message_stop``; ``finish`` before that raises (the stream was
    cut short).
    """

    def __init__(self) -> None:
        self._blocks: dict[int, _Block] = {}
        self._calls = 0
        self._usage = {"input_tokens": 0, "cache_read_input_tokens": 0,
                       "cache_creation_input_tokens": 0, "output_tokens": 0}
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None  # the stop sequence Anthropic matched
        self._pieces = 0  # output deltas seen, for a stream cut before its usage
        self.done = False

    def feed(self, event: str | None, raw: str) -> list[Delta]:
        """The deltas one event yields (often none)."""
        if self.done:
            return []
        data = json_object(raw)
        kind = data.get("type") or event
        if kind == "error":
            error = _dict(data.get("error"))
            kind = str(error.get("type", "error"))
            what = f"{kind}: {error.get('message', '')}".rstrip(": ")
            raise ErrorEvent(what, status=_ERROR_STATUS.get(kind))
        if kind == "message_start":
            self._add_usage(_dict(data.get("message")).get("usage"))
        elif kind == "content_block_start":
            return self._start(_int(data.get("index")), _dict(data.get("content_block")))
        elif kind == "content_block_delta":
            return self._delta(_int(data.get("index")), _dict(data.get("delta")))
        elif kind == "content_block_stop":
            block = self._blocks.get(_int(data.get("index")))
            if block is not None and block.tool is not None and not block.has_arguments:
                block.has_arguments = True  # a call without input still has JSON arguments
                return [Delta(tool_calls=(ToolCallDelta(block.tool, arguments="{}"),))]
        elif kind == "message_delta":
            delta = _dict(data.get("delta"))
            reason = delta.get("stop_reason")
            if isinstance(reason, str):
                self._stop_reason = reason
            matched = delta.get("stop_sequence")
            if isinstance(matched, str):
                self._stop_sequence = matched
            self._add_usage(data.get("usage"))
        elif kind == "message_stop":
            self.done = True
            finish = _FINISH.get(self._stop_reason or "end_turn", "stop")
            return [Delta(finish_reason=finish, stop=self._stop_sequence),
                    Delta(usage=self.counted())]
        return []  # ping, and event types Anthropic may add later

    def counted(self) -> TokenUsage:
        """The usage Anthropic reported so far (the prompt's at ``message_start``, the
        output's in ``message_delta``); before the output's, the output deltas seen."""
        u = self._usage
        cached = u["cache_read_input_tokens"]
        prompt = u["input_tokens"] + cached + u["cache_creation_input_tokens"]
        output = u["output_tokens"] if self.done else max(u["output_tokens"], self._pieces)
        return TokenUsage(prompt, output, cached)

    def finish(self) -> list[Delta]:
        """Called when the stream ended: raises unless it ended with ``message_stop``
        (whose deltas ``feed`` returned)."""
        if not self.done:
            raise incomplete("The upstream closed the stream before message_stop.")
        return []

    def _add_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            for key in self._usage:
                if isinstance(usage.get(key), int):
                    self._usage[key] = usage[key]

    def _start(self, index: int, block: dict[str, Any]) -> list[Delta]:
        kind = str(block.get("type"))
        if kind == "text":
            self._blocks[index] = _Block(kind)
            text = block.get("text")
            return [Delta(content=text)] if isinstance(text, str) and text else []
        if kind == "thinking":
            self._blocks[index] = _Block(kind)
            text = block.get("thinking")
            return [Delta(reasoning=text)] if isinstance(text, str) and text else []
        if kind != "tool_use":
            self._blocks[index] = _Block(kind)  # redacted_thinking, server tools: not relayed
            return []
        call = self._calls
        self._calls += 1
        entry = self._blocks[index] = _Block(kind, tool=call)
        pieces = [ToolCallDelta(call, id=str(block.get("id")), name=str(block.get("name")))]
        if block.get("input"):  # input given whole rather than streamed
            entry.has_arguments = True
            pieces.append(ToolCallDelta(call, arguments=json.dumps(block["input"])))
        return [Delta(tool_calls=tuple(pieces))]

    def _delta(self, index: int, delta: dict[str, Any]) -> list[Delta]:
        block = self._blocks.get(index)
        kind = delta.get("type")
        if block is None:
            return []
        self._pieces += 1
        if kind == "text_delta" and block.kind == "text":
            text = delta.get("text")
            return [Delta(content=text)] if isinstance(text, str) and text else []
        if kind == "input_json_delta" and block.tool is not None:
            fragment = delta.get("partial_json")
            if isinstance(fragment, str) and fragment:
                block.has_arguments = True
                return [Delta(tool_calls=(ToolCallDelta(block.tool, arguments=fragment),))]
        if block.kind == "thinking":
            if kind == "thinking_delta":
                text = delta.get("thinking")
                return [Delta(reasoning=text)] if isinstance(text, str) and text else []
            if kind == "signature_delta":
                signature = delta.get("signature")
                if isinstance(signature, str) and signature:
                    return [Delta(signature=signature)]
        return []  # citations, and what Anthropic may add later


# ---------------------------------------------------------------------------
# The backend


def _refusal(response: Response, raw: bytes) -> UpstreamError:
    """Anthropic's ``{"type": "error", "error": {"type", "message"}}``, or the body's text."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return refused(response, f"{error.get('type', 'error')}: {error['message']}")
    return refused(response, body_text(raw, response))


class AnthropicBackend(ProviderBackend):
    """Serves chat requests from Anthropic's Messages API (``POST {base_url}/v1/messages``).

    Requests go through ``transport`` (Kathan's ``HTTPPool``); ``session`` only asks
    ``{base_url}/v1/models`` whether a deployment whose circuit is open answers
    again (``probe``). ``open`` raises an ``UpstreamError`` before the first delta,
    or returns the ``DeltaStream`` the caller closes.

    ``base_url`` is the API's root (``https://api.anthropic.com``); a trailing
    ``/v1`` is accepted too.
    """

    def __init__(
        self, deployment: Deployment, session: aiohttp.ClientSession, transport: Transport
    ) -> None:
        self.deployment = deployment
        self._session = session
        base = deployment.base_url.rstrip("/")
        api = base if base.endswith("/v1") else base + "/v1"
        auth = {"anthropic-version": ANTHROPIC_VERSION}
        if deployment.api_key:
            auth["x-api-key"] = deployment.api_key
        self._endpoint = transport.endpoint(api + "/messages", {
            **auth, "content-type": "application/json", "accept-encoding": "gzip, deflate",
            **deployment.headers,
        })
        self._count = transport.endpoint(api + "/messages/count_tokens", {
            **auth, "content-type": "application/json", **deployment.headers})
        self._probe = api + "/models", {**auth, **deployment.headers}

    async def count_tokens(self, given: dict[str, Any]) -> int:
        """The upstream's count of a Messages request's prompt (``given``: a
        ``count_tokens`` body as the client sent it, without its model)."""
        body = json.dumps({**given, "model": self.deployment.model}, ensure_ascii=False)
        response = await send(self._count, body.encode(), self.deployment, _refusal)
        try:
            answer = json.loads(await response.read())
        finally:
            response.release()
        count = answer.get("input_tokens") if isinstance(answer, dict) else None
        if not isinstance(count, int):
            raise UpstreamUnavailable(
                "The upstream's count_tokens answer has no input_tokens.", retryable=False,
                retry_after=1, code="upstream_bad_response")
        return count

    def check(self, request: ChatCompletionRequest) -> None:
        refuse_extras(request, "anthropic")

    async def open(self, request: ChatCompletionRequest) -> DeltaStream:
        self.check(request)
        given = request._anthropic
        sent = (passed_through(given, request, self.deployment) if given is not None
                else to_anthropic(request, self.deployment))
        body = json.dumps(sent, ensure_ascii=False)
        response = await send(self._endpoint, body.encode(), self.deployment, _refusal)
        return await relay(response, StreamTranslator())
