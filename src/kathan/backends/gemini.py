"""The ``gemini`` backend: chat requests answered by Google's Gemini API.

Every request goes to ``POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse``
with the deployment's key in ``x-goog-api-key``; Kathan accumulates the
deltas itself when the client did not ask for a stream. Each SSE event is a
``GenerateContentResponse``.

How a chat request becomes a Gemini request (``to_gemini``):

- ``system``/``developer`` messages, wherever they are, become
  ``systemInstruction`` (one text part each; Gemini has one instruction per
  request). ``user`` stays ``user``; ``assistant`` becomes ``model``; tool
  results (and legacy ``function`` messages) become ``functionResponse`` parts
  in a ``user`` turn, named after the call whose ``tool_call_id`` they answer,
  with the content as ``response`` when it is a JSON object, else
  ``{"content": text}``. Consecutive turns of one role are merged.
- Images are inlined (``inlineData``): ``data:`` URLs are decoded and checked,
  http(s) URLs are fetched by Kathan (``kathan.backends.fetch``: SSRF-safe,
  size-limited), because Gemini's ``fileData`` only takes URIs of files
  uploaded to its Files API. All inline images of one request share a 20 MiB
  budget, Gemini's limit on inline data. ``image_url.detail`` has no Gemini
  counterpart (its ``mediaResolution`` is per request) and is not sent.
- Calls an assistant made become ``functionCall`` parts. The first call of a
  turn carries the thought signature Google documents for history the model
  did not sign (``skip_thought_signature_validator``): Kathan cannot keep
  Gemini's real signatures, and Gemini 3 refuses unsigned calls.
- ``tools``/``functions`` become ``functionDeclarations``, their parameters
  converted to Gemini's OpenAPI subset (``to_gemini_schema``); ``tool_choice``
  none/auto/required/named becomes mode ``NONE``/``AUTO``/``ANY``/``ANY`` with
  ``allowedFunctionNames``. ``parallel_tool_calls: false`` cannot be sent, so
  it is enforced on the way back: only a choice's first call is kept.
- ``generationConfig``: ``temperature``, ``topP``, ``topK``,
  ``maxOutputTokens``, ``stopSequences``, ``candidateCount`` (``n``),
  ``presencePenalty``, ``frequencyPenalty``, ``seed``, ``responseLogprobs``
  and ``logprobs`` (``top_logprobs``), ``responseMimeType``/``responseSchema``
  (``response_format``) and ``thinkingConfig.thinkingBudget``
  (``reasoning_effort``; with ``includeThoughts`` unless it is ``none``).
- Refused with a 400 naming the field: ``logit_bias``, ``repetition_penalty``
  and ``min_p``. Not sent, having no Gemini counterpart and
  no effect on the answer: ``user`` and the participants' ``name``.

Gemini's thought parts (``"thought": true``, sent when ``includeThoughts`` asks
for them) are the model's reasoning summaries, not its answer: they become
reasoning deltas, and ``thoughtsTokenCount`` (all the thinking, summarized or
not) the reasoning tokens, which are output tokens. Parts Kathan never asks for
(code execution, inline images from the model) are ignored.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from kathan.backends.base import Delta, DeltaStream, TokenUsage, ToolCallDelta
from kathan.backends.fetch import MAX_IMAGE_BYTES, fetch_image, parse_data_url
from kathan.backends.gemini_schema import to_gemini_schema
from kathan.backends.relay import ErrorEvent, incomplete, json_object, relay
from kathan.backends.toolcalls import ToolUse, new_call_id, tool_use
from kathan.backends.transport import Response, Transport
from kathan.backends.upstream import (
    Deployment,
    ProviderBackend,
    UpstreamBadRequest,
    UpstreamError,
    error_for_status,
    refuse_extras,
    refuse_unsupported,
    send,
)
from kathan.errors import InvalidRequestError
from kathan.protocol.chat import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatMessage,
    ContentPart,
    FunctionDefinition,
    SystemMessage,
    TextPart,
    TokenLogprob,
    ToolMessage,
    TopLogprob,
    UserMessage,
)

THINKING_BUDGETS = {
    "none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768,
}

# Google's documented stand-in signature for function calls Gemini did not produce itself.
FOREIGN_SIGNATURE = "skip_thought_signature_validator"

# Gemini's finish reasons as OpenAI's; any other reason is "stop".
_FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length"} | dict.fromkeys(
    ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
     "IMAGE_PROHIBITED_CONTENT"), "content_filter",
)

MAX_INLINE_BYTES = MAX_IMAGE_BYTES  # all inline images of one request: Gemini's limit


# -- requests --------------------------------------------------------------


def _refuse_unsupported(request: ChatCompletionRequest) -> None:
    checks = (
        (bool(request.logit_bias), "logit_bias"),
        (request.repetition_penalty is not None, "repetition_penalty"),
        (request.min_p is not None, "min_p"),
    )
    refuse_unsupported(checks, backend="gemini", model=request.model)
    if request.top_logprobs is not None and not request.logprobs:
        raise InvalidRequestError("'top_logprobs' needs 'logprobs': true.", param="top_logprobs")


def _text(content: str | list[TextPart] | list[ContentPart] | None) -> str:
    if isinstance(content, list):
        return "".join(part.text for part in content if isinstance(part, TextPart))
    return content or ""


@dataclass
class _Images:
    """Inlines a request's images, all of them within one byte budget."""

    session: aiohttp.ClientSession
    allow_private: bool
    remaining: int

    async def part(self, url: str, param: str) -> dict[str, Any]:
        if url[:5].lower() == "data:":
            mime, data = parse_data_url(url, param=param, max_bytes=self.remaining)
        else:
            mime, data = await fetch_image(
                url, self.session, param=param, max_bytes=self.remaining,
                allow_private=self.allow_private,
            )
        self.remaining -= len(data)
        return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode("ascii")}}


def _arguments(arguments: str, param: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"{param} is not valid JSON; Gemini needs a call's arguments as an object.",
            param=param,
        ) from exc
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{param} must be a JSON object for Gemini.", param=param)
    return value


def _function_response(name: str, content: str) -> dict[str, Any]:
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        value = None
    response = value if isinstance(value, dict) else {"content": content}
    return {"functionResponse": {"name": name, "response": response}}


def _model_parts(message: AssistantMessage, i: int, names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    text = _text(message.content) or message.refusal or ""
    if text:
        parts.append({"text": text})
    calls: list[tuple[str | None, str, str, str]] = [
        (c.id, c.function.name, c.function.arguments, f"messages[{i}].tool_calls[{j}].function")
        for j, c in enumerate(message.tool_calls or ())
    ]
    if message.function_call is not None:
        fc = message.function_call
        calls.append((None, fc.name, fc.arguments, f"messages[{i}].function_call"))
    for k, (call_id, name, arguments, where) in enumerate(calls):
        if call_id is not None:
            names[call_id] = name
        part: dict[str, Any] = {
            "functionCall": {"name": name, "args": _arguments(arguments, f"{where}.arguments")}
        }
        if k == 0:
            part["thoughtSignature"] = FOREIGN_SIGNATURE
        parts.append(part)
    return parts


async def _contents(
    messages: list[ChatMessage], images: _Images
) -> tuple[list[str], list[dict[str, Any]]]:
    """The system texts and Gemini's ``contents``."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name
    for i, message in enumerate(messages):
        parts: list[dict[str, Any]] = []
        role = "user"
        if isinstance(message, SystemMessage):
            if text := _text(message.content):
                system.append(text)
            continue
        if isinstance(message, UserMessage):
            items = [message.content] if isinstance(message.content, str) else message.content
            for j, item in enumerate(items):
                if isinstance(item, str | TextPart):
                    text = item if isinstance(item, str) else item.text
                    if text:  # Gemini refuses empty text parts
                        parts.append({"text": text})
                else:
                    param = f"messages[{i}].content[{j}].image_url.url"
                    parts.append(await images.part(item.image_url.url, param))
        elif isinstance(message, AssistantMessage):
            role = "model"
            parts = _model_parts(message, i, names)
        elif isinstance(message, ToolMessage):
            name = names.get(message.tool_call_id)
            if name is None:
                raise InvalidRequestError(
                    f"messages[{i}] answers tool call '{message.tool_call_id}', but no "
                    "earlier assistant message made a call with that id.",
                    param=f"messages[{i}].tool_call_id",
                )
            parts = [_function_response(name, _text(message.content))]
        else:
            parts = [_function_response(message.name, message.content or "")]
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    if not contents:
        raise InvalidRequestError(
            "Gemini needs at least one non-empty user or assistant message besides the "
            "system messages.",
            param="messages",
        )
    return system, contents


def _declaration(function: FunctionDefinition, where: str) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": function.name}
    if function.description:
        declaration["description"] = function.description
    if function.parameters:
        parameters = to_gemini_schema(function.parameters, param=f"{where}.parameters")
        if parameters.get("properties"):  # Gemini refuses an OBJECT with empty properties
            declaration["parameters"] = parameters
    return declaration


def _tools(use: ToolUse) -> dict[str, Any]:
    config: dict[str, Any] = {
        "none": {"mode": "NONE"}, "auto": {"mode": "AUTO"}, "required": {"mode": "ANY"},
    }.get(use.choice, {"mode": "ANY", "allowedFunctionNames": [use.choice]})
    return {
        "tools": [{"functionDeclarations": [
            _declaration(f, use.where(i)) for i, f in enumerate(use.functions)
        ]}],
        "toolConfig": {"functionCallingConfig": config},
    }


def _generation_config(request: ChatCompletionRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    simple = (
        ("temperature", request.temperature),
        ("topP", request.top_p),
        ("topK", request.top_k or None),  # llama.cpp's 0 means "off"; Gemini's minimum is 1
        ("maxOutputTokens", request.max_completion_tokens or request.max_tokens),
        ("stopSequences", list(request.stop_list) or None),
        ("candidateCount", request.n),
        ("presencePenalty", request.presence_penalty),
        ("frequencyPenalty", request.frequency_penalty),
        ("seed", request.seed),
    )
    config.update((key, value) for key, value in simple if value is not None)
    if request.logprobs:
        config["responseLogprobs"] = True
        if request.top_logprobs:
            config["logprobs"] = request.top_logprobs
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.json_schema.schema_ is not None:
            config["responseSchema"] = to_gemini_schema(
                fmt.json_schema.schema_, param="response_format.json_schema.schema"
            )
    if request.reasoning_effort is not None:
        thinking: dict[str, Any] = {"thinkingBudget": THINKING_BUDGETS[request.reasoning_effort]}
        if request.reasoning_effort != "none":
            thinking["includeThoughts"] = True  # the summaries, as reasoning
        config["thinkingConfig"] = thinking
    return config


async def to_gemini(
    request: ChatCompletionRequest,
    *,
    session: aiohttp.ClientSession,
    allow_private_fetch: bool = False,
) -> dict[str, Any]:
    """The ``GenerateContentRequest`` body for ``request`` (async: images may be fetched).

    Raises ``InvalidRequestError`` naming the field for what Gemini cannot be asked.
    A user message ``Hello`` becomes ``{"role": "user", "parts": [{"text": "Hello"}]}``
    in ``contents``; system messages go to ``systemInstruction``.
    """
    _refuse_unsupported(request)
    use = tool_use(request)
    images = _Images(session, allow_private_fetch, MAX_INLINE_BYTES)
    system, contents = await _contents(request.messages, images)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    if use is not None:
        body.update(_tools(use))
    if config := _generation_config(request):
        body["generationConfig"] = config
    return body


# -- responses -------------------------------------------------------------


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) else 0


def _logprobs(result: Any) -> tuple[TokenLogprob, ...]:
    """A candidate's ``logprobsResult`` as OpenAI's per-token logprobs."""
    if not isinstance(result, dict):
        return ()
    top = result.get("topCandidates") or []
    out = []
    for i, chosen in enumerate(result.get("chosenCandidates") or ()):
        alternatives = top[i].get("candidates") or [] if i < len(top) else []
        token = str(chosen.get("token", ""))
        out.append(TokenLogprob(
            token=token,
            logprob=float(chosen.get("logProbability", 0.0)),
            bytes=list(token.encode()),
            top_logprobs=[
                TopLogprob(
                    token=str(alt.get("token", "")),
                    logprob=float(alt.get("logProbability", 0.0)),
                    bytes=list(str(alt.get("token", "")).encode()),
                )
                for alt in alternatives
            ],
        ))
    return tuple(out)


def _error_event(error: Any) -> ErrorEvent:
    """The error of an ``{"error": {...}}`` event inside the stream (its ``code`` is
    an HTTP status)."""
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    message = str(error.get("message") or "an error event in the stream")
    return ErrorEvent(message, status=code if isinstance(code, int) else None)


class StreamTranslator:
    """Gemini's ``GenerateContentResponse`` chunks as ``Delta``s, one chunk at a time.

    Per candidate (``index``, default 0): text parts become content, thought
    parts reasoning, each ``functionCall`` becomes a whole tool call at once
    (id and name, then the arguments), ``finishReason`` becomes the choice's
    finish delta (``STOP`` is ``tool_calls`` once the candidate called a
    function). The last ``usageMetadata`` becomes one usage delta, sent by
    ``finish`` after every choice finished; ``finish`` raises if one did not.
    With ``parallel_tool_calls=False`` a choice keeps only its first call.

    Gemini's stream has no closing event: it is read to its end (``done`` stays
    false).

    >>> t = StreamTranslator()
    >>> [(d.content, d.finish_reason) for d in t.feed(None, '{"candidates": [{"content": '
    ...     '{"parts": [{"text": "Hi"}]}, "finishReason": "STOP"}]}')]
    [('Hi', None), (None, 'stop')]
    >>> t.finish()
    []
    """

    done = False

    def __init__(self, *, n: int = 1, parallel_tool_calls: bool = True) -> None:
        self._expected = set(range(n))
        self._max_calls = None if parallel_tool_calls else 1
        self._calls: dict[int, int] = {}
        self._finished: set[int] = set()
        self._usage: TokenUsage | None = None
        self._pieces = 0  # candidates' output parts seen, for a stream without usage yet

    def feed(self, event: str | None, data: str) -> list[Delta]:
        chunk = json_object(data)
        if "error" in chunk:
            raise _error_event(chunk["error"])
        candidates = chunk.get("candidates") or []
        feedback = chunk.get("promptFeedback")
        if not candidates and isinstance(feedback, dict) and feedback.get("blockReason"):
            raise UpstreamBadRequest(
                f"The upstream blocked the prompt ({feedback['blockReason']}).",
                retryable=False, upstream_status=200, code="prompt_blocked", param="messages",
            )
        out: list[Delta] = []
        for candidate in candidates:
            if isinstance(candidate, dict):
                out.extend(self._candidate(candidate))
        usage = chunk.get("usageMetadata")
        if isinstance(usage, dict):
            self._usage = TokenUsage(
                prompt_tokens=_count(usage, "promptTokenCount"),
                completion_tokens=(
                    _count(usage, "candidatesTokenCount") + _count(usage, "thoughtsTokenCount")
                ),
                cached_tokens=_count(usage, "cachedContentTokenCount"),
                reasoning_tokens=_count(usage, "thoughtsTokenCount"),
            )
        return out

    def finish(self) -> list[Delta]:
        unfinished = sorted(self._expected - self._finished)
        if unfinished:
            raise incomplete(
                f"The upstream closed the stream before choice {unfinished[0]} finished."
            )
        return [Delta(usage=self._usage)] if self._usage is not None else []

    def counted(self) -> TokenUsage:
        """Gemini's last ``usageMetadata`` (it comes with most chunks, counts so far);
        before any, the output parts seen."""
        return self._usage or TokenUsage(0, self._pieces)

    def _candidate(self, candidate: dict[str, Any]) -> list[Delta]:
        index = candidate.get("index", 0)
        index = index if isinstance(index, int) else 0
        self._expected.add(index)
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[ToolCallDelta] = []
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts or ():
            if not isinstance(part, dict):
                continue
            self._pieces += 1
            if part.get("thought") is True:
                if isinstance(part.get("text"), str):
                    thoughts.append(part["text"])
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("functionCall"), dict):
                k = self._calls.get(index, 0)
                if self._max_calls is not None and k >= self._max_calls:
                    continue
                self._calls[index] = k + 1
                call = part["functionCall"]
                calls.append(ToolCallDelta(k, id=new_call_id(), name=str(call.get("name", ""))))
                calls.append(ToolCallDelta(
                    k, arguments=json.dumps(call.get("args") or {}, ensure_ascii=False)
                ))
        out: list[Delta] = []
        if thought := "".join(thoughts):
            out.append(Delta(index, reasoning=thought))
        text = "".join(texts)
        logprobs = _logprobs(candidate.get("logprobsResult"))
        if text or calls or logprobs:
            out.append(Delta(index, content=text or None, logprobs=logprobs, tool_calls=tuple(calls)))
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and index not in self._finished:
            self._finished.add(index)
            finish = _FINISH_REASONS.get(reason, "stop")
            if finish == "stop" and self._calls.get(index):
                finish = "tool_calls"
            out.append(Delta(index, finish_reason=finish))
        return out


# -- the backend -------------------------------------------------------------


def _google_error(raw: bytes) -> tuple[str, bool, int | None]:
    """Google's error body: its message, whether the key was invalid, its retry delay."""
    try:
        body: Any = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace").strip()[:500] or "no details", False, None
    if isinstance(body, list) and body:  # the JSON-array framing of streamGenerateContent
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return str(body)[:500], False, None
    message = str(error.get("message") or "no details")
    if isinstance(error.get("status"), str):
        message = f"{message} ({error['status']})"
    key_invalid, delay = False, None
    for detail in error.get("details") or ():
        if not isinstance(detail, dict):
            continue
        key_invalid = key_invalid or detail.get("reason") == "API_KEY_INVALID"
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = _seconds(str(detail.get("retryDelay", "")).removesuffix("s"))
    return message, key_invalid, delay


def _seconds(value: str | None) -> int | None:
    try:
        seconds = float(value) if value else math.nan
    except ValueError:
        return None  # an HTTP date, or nonsense
    return max(1, math.ceil(seconds)) if math.isfinite(seconds) and seconds >= 0 else None


def google_refusal(response: Response, raw: bytes) -> UpstreamError:
    """The Kathan error for a Gemini API answer that is not a success (every method's)."""
    message, key_invalid, delay = _google_error(raw)
    retry = _seconds(response.headers.get("Retry-After")) or delay
    status = response.status
    if status == 400 and key_invalid:
        # Google answers a wrong key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID): the
        # operator's fault, not the client's; reported as the 401 it means, for the router.
        status = 401
    return error_for_status(status, message, retry_after=retry,
                            location=response.headers.get("Location"))


class GeminiBackend(ProviderBackend):
    """Answers chat requests with one Gemini deployment.

    Requests go through ``transport`` (Kathan's ``HTTPPool``); ``session`` fetches
    the image URLs Kathan must inline and asks ``{base_url}/v1beta/models``
    whether a deployment whose circuit is open answers again (``probe``).
    ``allow_private_fetch`` lets image URLs reach private addresses: for tests only.
    ``open`` raises a ``KathanError`` before the first delta, or returns the
    ``DeltaStream`` the caller closes.
    """

    def __init__(
        self,
        deployment: Deployment,
        session: aiohttp.ClientSession,
        transport: Transport,
        *,
        allow_private_fetch: bool = False,
    ) -> None:
        self.deployment = deployment
        self._session = session
        self._allow_private_fetch = allow_private_fetch
        base = deployment.base_url.rstrip("/")
        model = quote(deployment.model.removeprefix("models/"), safe="")
        self.url = f"{base}/v1beta/models/{model}:streamGenerateContent?alt=sse"
        key = {"x-goog-api-key": deployment.api_key} if deployment.api_key else {}
        self._endpoint = transport.endpoint(self.url, {
            **deployment.headers, "Content-Type": "application/json",
            "Accept-Encoding": "gzip, deflate", **key,
        })
        self._probe = f"{base}/v1beta/models", {**deployment.headers, **key}

    def check(self, request: ChatCompletionRequest) -> None:
        refuse_extras(request, "gemini")

    async def open(self, request: ChatCompletionRequest) -> DeltaStream:
        self.check(request)
        body = await to_gemini(
            request, session=self._session, allow_private_fetch=self._allow_private_fetch
        )
        default = self.deployment.default_max_tokens
        if default is not None:  # the model's default, for a request that sets no limit
            body.setdefault("generationConfig", {}).setdefault("maxOutputTokens", default)
        translator = StreamTranslator(
            n=request.n or 1, parallel_tool_calls=request.parallel_tool_calls is not False
        )
        response = await send(self._endpoint, json.dumps(body).encode(), self.deployment,
                              google_refusal)
        return await relay(response, translator)
