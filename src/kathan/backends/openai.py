"""The ``openai`` backend: any OpenAI-compatible server (vLLM, SGLang, llama.cpp,
Ollama, OpenAI, OpenRouter, another Kathan).

Every parameter the client sent goes upstream as sent, provider extras
included; only ``model`` becomes the deployment's model name, and an assistant
message's ``reasoning_content`` is not sent (OpenAI's API has no such field, and
DeepSeek's reasoner answers 400 to it: an earlier turn's reasoning is not sent
back). The upstream's reasoning (``reasoning_content``, or ``reasoning`` as
OpenRouter, Groq and Ollama call it) becomes reasoning deltas, its
``completion_tokens_details.reasoning_tokens`` the reasoning tokens. A streaming
request streams upstream too, asking for usage with ``stream_options``; a
non-streaming one is sent non-streaming, which gives exact usage even from
servers that ignore ``stream_options`` (llama-cpp-python's does), and is read
whole before ``open`` returns, so whatever is wrong with it still gets a status
code. Either way the answer becomes the one stream of deltas Kathan builds its
replies from (``kathan.backends.relay``).
When a stream still comes without usage, completion tokens are counted as the
chunks that carried output (one per token on llama.cpp, vLLM and SGLang) and
prompt tokens are reported as 0.

A legacy completion (``/v1/completions``) goes to the upstream's ``/completions``
the same way, as the client sent it; its ``text_completion`` choices become the
same deltas, legacy ``logprobs`` included. Embeddings are
``backends/upstream_embeddings.py``'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
from pydantic_core import to_json

from kathan.backends.base import Delta, DeltaStream, TokenUsage, ToolCallDelta
from kathan.backends.relay import ErrorEvent, WholeBody, incomplete, json_object, relay
from kathan.backends.transport import Response, Transport
from kathan.backends.upstream import (
    Deployment,
    ProviderBackend,
    UpstreamError,
    body_text,
    refused,
    send,
)
from kathan.protocol.chat import ChatCompletionRequest, TokenLogprob, TopLogprob, construct
from kathan.protocol.completions import CompletionRequest


def upstream_body(
    request: ChatCompletionRequest, model: str, default_max_tokens: int | None = None
) -> dict[str, Any]:
    """The request as the upstream gets it; ``default_max_tokens`` (the model's
    configured default) for a request that gives no limit of its own."""
    body = request.model_dump(mode="json", exclude_none=True, by_alias=True)
    for message in body["messages"]:
        # OpenAI refuses it and DeepSeek's reasoner too: earlier reasoning is not resent.
        message.pop("reasoning_content", None)
    body.update(request.model_extra or {})
    body["model"] = model
    if default_max_tokens is not None and "max_tokens" not in body \
            and "max_completion_tokens" not in body:
        body["max_tokens"] = default_max_tokens
    if request.stream:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True  # usage is always recorded, whatever the client wants
        body["stream_options"] = options
    else:
        body["stream"] = False
        body.pop("stream_options", None)
    return body


# OpenAI's default for a legacy completion that gives no max_tokens.
COMPLETION_MAX_TOKENS = 16


def completion_body(
    completion: CompletionRequest, request: ChatCompletionRequest, model: str,
    default_max_tokens: int | None = None,
) -> dict[str, Any]:
    """A legacy completion as the upstream gets it: every field as the client sent it
    but ``model``, with the ``max_tokens`` Kathan's path set (``request``'s: the key's
    cap, for a request that gives none), or the model's configured default where it
    is below OpenAI's 16."""
    body = completion.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    body["model"] = model
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    elif default_max_tokens is not None and default_max_tokens < COMPLETION_MAX_TOKENS:
        body["max_tokens"] = default_max_tokens
    if completion.stream:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True  # usage is always recorded, whatever the client wants
        body["stream_options"] = options
    else:
        body["stream"] = False
        body.pop("stream_options", None)
    return body


def error_message(raw: bytes, response: Response) -> str:
    """The upstream's own words from an error body (OpenAI's, FastAPI's or plain text)."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body_text(raw, response)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if "detail" in body:
            return json.dumps(body["detail"])[:2000]
    return body_text(raw, response)


def _refusal(response: Response, raw: bytes) -> UpstreamError:
    return refused(response, error_message(raw, response))


class OpenAIBackend(ProviderBackend):
    """Relays chat requests to an OpenAI-compatible ``/chat/completions``, and legacy
    completions (a request whose ``_completion`` is set) to its ``/completions``.

    Requests go through ``transport`` (Kathan's ``HTTPPool``: this relay is on every
    request's path); ``session`` only asks ``{base_url}/models`` whether a
    deployment whose circuit is open answers again (``probe``). ``open`` raises an
    ``UpstreamError`` before the first delta, or returns the ``DeltaStream`` the
    caller closes.
    """

    def __init__(
        self, deployment: Deployment, session: aiohttp.ClientSession, transport: Transport
    ) -> None:
        self.deployment = deployment
        self._session = session
        base = deployment.base_url.rstrip("/")
        auth = {**deployment.headers}
        if deployment.api_key:
            auth["Authorization"] = f"Bearer {deployment.api_key}"
        headers = {"Content-Type": "application/json", "Accept-Encoding": "gzip, deflate",
                   "User-Agent": "kathan", **auth}
        self._endpoint = transport.endpoint(base + "/chat/completions", headers)
        self._completions = transport.endpoint(base + "/completions", headers)
        self._probe = base + "/models", auth

    # Legacy completions go upstream as sent (``/v1/completions``).
    serves_raw_prompts = True

    def check(self, request: ChatCompletionRequest) -> None:
        return None  # every parameter goes upstream as sent

    async def open(self, request: ChatCompletionRequest) -> DeltaStream:
        d = self.deployment
        completion: CompletionRequest | None = request._completion
        if completion is not None:
            body = to_json(completion_body(completion, request, d.model, d.default_max_tokens))
            response = await send(self._completions, body, d, _refusal)
            if request.stream:
                return await relay(response, ChunkTranslator(_text_deltas))
            return await relay(response, WholeTranslator(_text_deltas), WholeBody())
        body = to_json(upstream_body(request, d.model, d.default_max_tokens))
        response = await send(self._endpoint, body, d, _refusal)
        if request.stream:
            return await relay(response, ChunkTranslator())
        return await relay(response, WholeTranslator(), WholeBody())


def _error_event(error: Any) -> ErrorEvent:
    """An ``{"error": ...}`` chunk or body; its ``code`` is an HTTP status on vLLM."""
    if not isinstance(error, dict):
        return ErrorEvent(str(error))
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code < 600 else None
    return ErrorEvent(str(error.get("message") or error.get("type") or "an error"),
                      status=status)


ChoiceDeltas = Callable[[dict[str, Any]], list[Delta]]


class ChunkTranslator:
    """A streamed answer's ``chat.completion.chunk`` events (or, with ``_text_deltas``,
    a legacy completion's ``text_completion`` chunks), until ``[DONE]``.

    When no chunk carried usage, the chunks that carried output count as the
    completion tokens (one token each on llama.cpp, vLLM and SGLang).
    """

    __slots__ = ("_choice_deltas", "_pieces", "_usage", "done")

    def __init__(self, choice_deltas: ChoiceDeltas | None = None) -> None:
        self.done = False
        self._usage: TokenUsage | None = None
        self._pieces = 0
        self._choice_deltas = choice_deltas or _choice_deltas

    def feed(self, event: str | None, data: str) -> list[Delta]:
        if data == "[DONE]" or data.strip() == "[DONE]":
            self.done = True
            return []
        chunk = json_object(data)
        if "error" in chunk:
            raise _error_event(chunk["error"])
        out: list[Delta] = []
        for choice in chunk.get("choices") or ():
            for delta in self._choice_deltas(choice):
                self._pieces += delta.finish_reason is None
                out.append(delta)
        if chunk.get("usage"):
            self._usage = _usage(chunk["usage"])
        return out

    def finish(self) -> list[Delta]:
        if not self.done:
            raise incomplete("The upstream closed the stream before it finished.")
        return [Delta(usage=self.counted())]

    def counted(self) -> TokenUsage:
        # Before the usage chunk, the prompt's size is unknown (an OpenAI-compatible
        # stream reports it at the end): only the output pieces can be counted.
        return self._usage or TokenUsage(0, self._pieces)


class WholeTranslator:
    """A non-streamed answer: one ``chat.completion`` body (or, with ``_text_deltas``, a
    legacy ``text_completion``), as deltas."""

    __slots__ = ("_choice_deltas", "_usage", "done")

    def __init__(self, choice_deltas: ChoiceDeltas | None = None) -> None:
        self.done = False
        self._usage = TokenUsage(0, 0)
        self._choice_deltas = choice_deltas or _message_deltas

    def feed(self, event: str | None, data: str) -> list[Delta]:
        body = json_object(data)
        if "error" in body:
            raise _error_event(body["error"])
        out: list[Delta] = []
        for choice in body.get("choices") or ():
            out += self._choice_deltas({**choice,
                                        "finish_reason": choice.get("finish_reason") or "stop"})
        self._usage = _usage(body.get("usage") or {})
        out.append(Delta(usage=self._usage))
        self.done = True
        return out

    def finish(self) -> list[Delta]:
        if not self.done:
            raise incomplete("The upstream's answer ended before its body.")
        return []

    def counted(self) -> TokenUsage:
        return self._usage  # nothing before the whole body was read


def _message_deltas(choice: dict[str, Any]) -> list[Delta]:
    """A whole ``chat.completion`` choice, read as the one chunk that carries it all."""
    message = choice.get("message") or {}
    return _choice_deltas({
        "index": choice.get("index", 0), "logprobs": choice.get("logprobs"),
        "delta": {"content": message.get("content"),
                  "reasoning_content": message.get("reasoning_content"),
                  "reasoning": message.get("reasoning"),
                  "function_call": message.get("function_call"),
                  "tool_calls": [{"index": i, **call} for i, call
                                 in enumerate(message.get("tool_calls") or ())]},
        "finish_reason": choice.get("finish_reason")})


def _text_deltas(choice: dict[str, Any]) -> list[Delta]:
    """A ``text_completion`` choice (whole, or a chunk's piece): its text, with its
    legacy ``logprobs`` as ``TokenLogprob``s (the renderer gives them their legacy
    shape back), then its finish."""
    index = int(choice.get("index", 0))
    text = choice.get("text")
    if text is not None and not isinstance(text, str):
        raise TypeError("a choice's text is not a string")
    logprobs = _legacy_logprobs(choice.get("logprobs"))
    out: list[Delta] = []
    if text or logprobs:
        out.append(Delta(index=index, content=text or None, logprobs=logprobs))
    finish = choice.get("finish_reason")
    if finish:
        out.append(Delta(index=index, finish_reason=str(finish)))
    return out


def _legacy_logprobs(raw: Any) -> tuple[TokenLogprob, ...]:
    """Legacy ``{tokens, token_logprobs, top_logprobs, text_offset}`` as one
    ``TokenLogprob`` per token. An echoed prompt's first token has no log probability
    (null); it stays null, which only the legacy shape can say."""
    if not raw:
        return ()
    tokens = raw["tokens"]
    values = raw.get("token_logprobs") or [None] * len(tokens)
    tops = raw.get("top_logprobs") or [None] * len(tokens)
    return tuple(
        construct(TokenLogprob, token=str(token),
                  logprob=None if value is None else float(value),
                  top_logprobs=[construct(TopLogprob, token=str(t), logprob=float(v))
                                for t, v in (top or {}).items()])
        for token, value, top in zip(tokens, values, tops, strict=True))


def _choice_deltas(choice: dict[str, Any]) -> list[Delta]:
    index = int(choice.get("index", 0))
    delta = choice.get("delta") or {}
    raw_calls = delta.get("tool_calls")
    calls = tuple(
        ToolCallDelta(
            index=int(call.get("index", 0)),
            id=call.get("id"),
            name=(call.get("function") or {}).get("name"),
            arguments=(call.get("function") or {}).get("arguments") or "",
        )
        for call in raw_calls
    ) if raw_calls else ()
    legacy = delta.get("function_call")
    if legacy:
        calls += (ToolCallDelta(0, id=None, name=legacy.get("name"),
                                arguments=legacy.get("arguments") or ""),)
    raw_logprobs = choice.get("logprobs")
    entries = raw_logprobs.get("content") if raw_logprobs else None
    logprobs = tuple(TokenLogprob.model_validate(entry) for entry in entries) if entries else ()
    out: list[Delta] = []
    # DeepSeek, vLLM and llama.cpp's server say reasoning_content; OpenRouter, Groq and
    # Ollama say reasoning.
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if reasoning and isinstance(reasoning, str):
        out.append(Delta(index=index, reasoning=reasoning))
    content = delta.get("content")
    if content or calls or logprobs:
        out.append(Delta(index=index, content=content or None, tool_calls=calls,
                         logprobs=logprobs))
    finish = choice.get("finish_reason")
    if finish:
        out.append(Delta(index=index, finish_reason=str(finish)))
    return out


def _usage(raw: dict[str, Any]) -> TokenUsage:
    details = raw.get("prompt_tokens_details") or {}
    completion = raw.get("completion_tokens_details") or {}
    return TokenUsage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        reasoning_tokens=int(completion.get("reasoning_tokens") or 0),
    )
