"""A strict fake of Google's Gemini API (``generateContent``/``streamGenerateContent``), for tests.

>>> script = Script()
>>> async with serve(script) as base_url:      # http://127.0.0.1:<free port>
...     ...   # POST f"{base_url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
>>> script.requests                             # the bodies it accepted

Routes: ``POST /v1beta/models/{model}:streamGenerateContent`` (SSE with
``?alt=sse``, else the JSON-array framing the real API uses without it),
``POST /v1beta/models/{model}:generateContent`` (one JSON response),
``POST /v1beta/models/{model}:batchEmbedContents`` (for ``Script.embedding_models``:
a deterministic unit vector per text, ``outputDimensionality`` values of it when
given, and ``usageMetadata.promptTokenCount``, one token per word, unless
``Script.usage_metadata`` is off, as in older API versions),
``GET /v1beta/models`` and, for image-fetch tests, ``GET /image.png`` (a 1x1
PNG). Any other method, or a model outside ``Script.models`` (for embeddings,
``Script.embedding_models``), is a 404 ``NOT_FOUND``.

It checks requests the way the real API does and answers in Google's error
shape, ``{"error": {"code", "message", "status"[, "details"]}}``:

- The key comes in ``x-goog-api-key`` or ``?key=``. As the real API does, a
  missing key is a 403 ``PERMISSION_DENIED`` ("unregistered callers") and a
  wrong one a 400 ``INVALID_ARGUMENT`` whose ``details`` hold an ``ErrorInfo``
  with reason ``API_KEY_INVALID`` (Google never answers 401 here; a 401 can be
  scripted).
- 400 ``INVALID_ARGUMENT`` for: a body that is not JSON; unknown fields
  anywhere (the proto JSON parser's "Unknown name ... Cannot find field"),
  which is how ``additionalProperties``, ``$ref``, ``$schema`` and friends in
  ``parameters``/``responseSchema`` fail; empty ``contents``; roles other than
  ``user``, ``model`` and ``function``; empty ``parts``; parts without exactly
  one data field (an empty ``text`` counts as none, as in proto3); bad
  ``inlineData``; a ``functionResponse`` turn that does not directly follow a
  ``functionCall`` turn, answers a name that turn did not call, or answers a
  different number of calls; a ``functionCall`` turn that follows no user turn;
  invalid ``functionCallingConfig`` modes, ``allowedFunctionNames`` with a mode
  other than ``ANY`` or naming undeclared functions; schema types and formats
  Gemini does not know, ``enum`` on non-strings, empty ``properties``, arrays
  without ``items``,
  ``required`` names that are not properties, ``parameters`` that are not an
  ``OBJECT``; ``responseSchema`` without ``responseMimeType:
  application/json``; ``candidateCount`` outside 1-8; more than 5
  ``stopSequences``; sampling values out of range; ``logprobs`` without
  ``responseLogprobs``.
- It speaks only the canonical lowerCamelCase field names (the real API's
  proto parser also takes snake_case).

A valid request is answered by replaying a recording from ``recordings/``
(adapted from Google's documentation examples), chosen by this rule:
``Script.recording`` when set; else ``gemini_json.sse`` when
``generationConfig.responseMimeType`` is ``application/json``; else
``gemini_function_call.sse`` when function declarations are given and the
mode is not ``NONE``; else ``gemini_thinking.sse`` (thought summaries, parts
with ``"thought": true``, before the answer) when
``thinkingConfig.includeThoughts`` is true; else ``gemini_text.sse``. A recorded call is renamed to
the first of ``allowedFunctionNames``, else the first declared function, when
its own name is not declared. With ``candidateCount`` n, every chunk carries n
copies of the candidate (indexes 0..n-1). Events go out as Google sends them:
``data: {...}\\r\\n\\r\\n``.

``Script`` makes it misbehave for fault tests. The fake imports nothing from Kathan.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import json
import re
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

RECORDINGS = Path(__file__).parent / "recordings"
API_KEY = "gemini-test-key"
MODELS = frozenset({"gemini-2.0-flash", "gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview"})
EMBEDDING_MODELS = frozenset({"gemini-embedding-001", "text-embedding-004"})
EMBEDDING_DIMENSIONS = 768  # text-embedding-004's (gemini-embedding-001 has 3072)
MAX_EMBED_BATCH = 100

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_REQUEST = frozenset({
    "contents", "tools", "toolConfig", "safetySettings", "systemInstruction",
    "generationConfig", "cachedContent",
})
_PART_DATA = frozenset({
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult",
})
_PART = _PART_DATA | {"thought", "thoughtSignature", "videoMetadata"}
_TOOL = frozenset({
    "functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext",
})
_DECLARATION = frozenset({
    "name", "description", "parameters", "parametersJsonSchema", "response",
    "responseJsonSchema", "behavior",
})
_GENERATION = frozenset({
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
    "responseModalities", "candidateCount", "maxOutputTokens", "temperature", "topP", "topK",
    "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs",
    "enableEnhancedCivicAnswers", "speechConfig", "thinkingConfig", "mediaResolution",
})
_SCHEMA = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
    "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
    "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum",
})
_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"})
_FORMATS = {
    "STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64"},
}
_MODES = frozenset({"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"})
_MIME_TYPES = frozenset({"text/plain", "application/json", "text/x.enum"})
_FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")


@dataclass
class Script:
    """How the fake behaves, and what it saw; the default is a well-behaved API.

    - ``status``: answer every request that passed the key check with this
      status and Google's error body (``message``); ``fail_next`` limits that
      to the next N requests (0: every request).
    - ``retry_after``: a ``Retry-After`` header (seconds) on that error;
      ``retry_delay``: a ``RetryInfo`` detail (e.g. ``"7s"``), as Google sends on 429.
    - ``delay``: seconds before answering at all; ``chunk_delay``: between events.
    - ``die_after``: close the connection after this many events.
    - ``error_after``: after this many events, send an error event (code 503,
      ``UNAVAILABLE``) and end the stream.
    - ``block_prompt``: answer with ``promptFeedback.blockReason`` and no candidates.
    - ``recording``: replay this recording (a name in ``recordings/`` without
      ``.sse``), whatever the request.
    - ``models``: the models it serves; others are a 404 ``NOT_FOUND``.
    - ``embedding_models``: the models ``batchEmbedContents`` serves;
      ``usage_metadata``: whether its answers carry ``usageMetadata``.
    """

    api_key: str = API_KEY
    status: int | None = None
    message: str = "Scripted failure"
    fail_next: int = 0
    retry_after: int | None = None
    retry_delay: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    die_after: int | None = None
    error_after: int | None = None
    block_prompt: str | None = None
    recording: str | None = None
    models: frozenset[str] = MODELS
    embedding_models: frozenset[str] = EMBEDDING_MODELS
    usage_metadata: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    disconnects: int = 0
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


class Invalid(Exception):
    """A request the real API would refuse with 400 INVALID_ARGUMENT."""


def error_response(
    status: int, message: str, *, details: list[dict[str, Any]] | None = None,
    retry_after: int | None = None,
) -> web.Response:
    """An answer in Google's error shape."""
    error: dict[str, Any] = {
        "code": status, "message": message, "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": error}, status=status, headers=headers)


def tiny_png() -> bytes:
    """A valid 1x1 transparent PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00\x00")) + chunk(b"IEND", b""))


def load_recording(name: str) -> list[dict[str, Any]]:
    """A recording's events: the JSON of each ``data:`` line."""
    text = (RECORDINGS / f"{name}.sse").read_text()
    return [json.loads(line[len("data:"):]) for line in text.splitlines()
            if line.startswith("data:")]


# -- validation ---------------------------------------------------------------


def _fields(value: Any, allowed: frozenset[str] | set[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"Invalid value at '{where}', expected an object.")
    for name in value:
        if name not in allowed:
            raise Invalid(
                f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': "
                "Cannot find field."
            )
    return value


def _number(value: Any, where: str, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"Invalid value at '{where}', expected a number.")
    if (low is not None and value < low) or (high is not None and value > high):
        raise Invalid(f"* GenerateContentRequest.{where}: must be in the range [{low}, {high}]")


def _schema(value: Any, where: str, depth: int = 0) -> str | None:
    """Check a Schema; return its type (upper case) or None."""
    schema = _fields(value, _SCHEMA, where)
    if depth > 32:
        raise Invalid(f"* GenerateContentRequest.{where}: schema is nested too deeply")
    kind = schema.get("type")
    if kind is not None:
        if not isinstance(kind, str) or kind.upper() not in _TYPES:
            raise Invalid(f"Invalid value at '{where}.type', \"{kind}\"")
        kind = kind.upper()
    if "format" in schema and schema["format"] not in _FORMATS.get(kind or "", set()):
        raise Invalid(
            f"* GenerateContentRequest.{where}.format: only 'enum' and 'date-time' are "
            "supported for STRING type"
        )
    if "enum" in schema and (
            kind != "STRING" or not all(isinstance(e, str) for e in schema["enum"])):
        raise Invalid(f"* GenerateContentRequest.{where}.enum: only allowed for STRING type")
    if "properties" in schema:
        properties = schema["properties"]
        if not isinstance(properties, dict) or not properties:
            raise Invalid(
                f"* GenerateContentRequest.{where}.properties: should be non-empty for "
                "OBJECT type"
            )
        for name, sub in properties.items():
            _schema(sub, f"{where}.properties[{name}]", depth + 1)
    for i, name in enumerate(schema.get("required") or ()):
        if name not in (schema.get("properties") or {}):
            raise Invalid(f"* GenerateContentRequest.{where}.required[{i}]: property is not "
                          "defined")
    if "items" in schema:
        _schema(schema["items"], f"{where}.items", depth + 1)
    elif kind == "ARRAY":
        raise Invalid(f"* GenerateContentRequest.{where}.items: missing field.")
    if "anyOf" in schema:
        if not isinstance(schema["anyOf"], list) or not schema["anyOf"]:
            raise Invalid(f"Invalid value at '{where}.anyOf', expected a non-empty list.")
        for i, sub in enumerate(schema["anyOf"]):
            _schema(sub, f"{where}.anyOf[{i}]", depth + 1)
    return kind


def _base64(value: Any, where: str) -> None:
    try:
        if not isinstance(value, str) or not value:
            raise ValueError
        base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except (ValueError, binascii.Error):
        raise Invalid(f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed") from None


def _part(value: Any, where: str) -> dict[str, Any]:
    part = _fields(value, _PART, where)
    data = [k for k in _PART_DATA if k in part and part[k] not in ("", None)]
    if len(data) != 1:
        raise Invalid(
            f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have "
            "one initialized field"
        )
    if "text" in part and not isinstance(part["text"], str):
        raise Invalid(f"Invalid value at '{where}.text', expected a string.")
    if "inlineData" in part:
        blob = _fields(part["inlineData"], {"mimeType", "data"}, f"{where}.inline_data")
        if not blob.get("mimeType"):
            raise Invalid(f"* GenerateContentRequest.{where}.inline_data.mime_type: required")
        _base64(blob.get("data"), f"{where}.inline_data.data")
    if "fileData" in part:
        _fields(part["fileData"], {"mimeType", "fileUri"}, f"{where}.file_data")
    if "functionCall" in part:
        call = _fields(part["functionCall"], {"id", "name", "args"}, f"{where}.function_call")
        if not call.get("name"):
            raise Invalid(f"* GenerateContentRequest.{where}.function_call.name: name is not "
                          "specified")
        if not isinstance(call.get("args", {}), dict):
            raise Invalid(f"Invalid value at '{where}.function_call.args', expected an object.")
    if "functionResponse" in part:
        response = _fields(part["functionResponse"],
                           {"id", "name", "response", "willContinue", "scheduling"},
                           f"{where}.function_response")
        if not response.get("name"):
            raise Invalid(f"* GenerateContentRequest.{where}.function_response.name: name is "
                          "not specified")
        if not isinstance(response.get("response", {}), dict):
            raise Invalid(f"Invalid value at '{where}.function_response.response', expected "
                          "an object.")
    if "thoughtSignature" in part:
        _base64(part["thoughtSignature"], f"{where}.thought_signature")
    return part


def _contents(value: Any) -> None:
    if not isinstance(value, list) or not value:
        raise Invalid("* GenerateContentRequest.contents: contents is not specified")
    previous: tuple[str, list[str]] = ("", [])  # the last turn's role and the calls it made
    for i, item in enumerate(value):
        where = f"contents[{i}]"
        content = _fields(item, {"role", "parts"}, where)
        role = content.get("role", "user")
        if role not in ("user", "model", "function"):
            raise Invalid(f"Please use a valid role: user, model. (got '{role}' at {where})")
        if not isinstance(content.get("parts"), list) or not content["parts"]:
            raise Invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not "
                          "be empty.")
        parts = [_part(p, f"{where}.parts[{j}]") for j, p in enumerate(content["parts"])]
        calls = [p["functionCall"]["name"] for p in parts if "functionCall" in p]
        answers = [p["functionResponse"]["name"] for p in parts if "functionResponse" in p]
        if calls and (previous[0] not in ("user", "function") or role != "model"):
            raise Invalid("Please ensure that function call turn comes immediately after a "
                          "user turn or after a function response turn.")
        if answers:
            if not previous[1]:
                raise Invalid("Please ensure that function response turn comes immediately "
                              "after a function call turn.")
            if len(answers) != len(previous[1]):
                raise Invalid("Please ensure that the number of function response parts is "
                              "equal to the number of function call parts of the function "
                              "call turn.")
            for name in answers:
                if name not in previous[1]:
                    raise Invalid(f"* GenerateContentRequest.{where}: function response "
                                  f"'{name}' answers no call of the function call turn.")
        previous = (role, calls)


def _tools(body: dict[str, Any]) -> list[str]:
    """Check ``tools`` and ``toolConfig``; return the declared function names."""
    names: list[str] = []
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        raise Invalid("Invalid value at 'tools', expected a list.")
    for i, tool in enumerate(tools):
        for j, item in enumerate(_fields(tool, _TOOL, f"tools[{i}]").get("functionDeclarations")
                                 or ()):
            where = f"tools[{i}].function_declarations[{j}]"
            declaration = _fields(item, _DECLARATION, where)
            name = declaration.get("name")
            if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
                raise Invalid(f"* GenerateContentRequest.{where}.name: Invalid function name. "
                              "Must start with a letter or an underscore. Must be a-z, A-Z, "
                              "0-9, or contain underscores, dots, colons and dashes, with a "
                              "maximum length of 64.")
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                raise Invalid(f"* GenerateContentRequest.{where}: parameters and "
                              "parameters_json_schema are mutually exclusive")
            if "parameters" in declaration and _schema(
                    declaration["parameters"], f"{where}.parameters") != "OBJECT":
                raise Invalid(f"* GenerateContentRequest.{where}.parameters.type: must be "
                              "OBJECT")
            names.append(name)
    config = _fields(body.get("toolConfig", {}), {"functionCallingConfig", "retrievalConfig"},
                     "tool_config")
    calling = _fields(config.get("functionCallingConfig", {}), {"mode", "allowedFunctionNames"},
                      "tool_config.function_calling_config")
    mode = calling.get("mode", "AUTO")
    if mode not in _MODES:
        raise Invalid(f"Invalid value at 'tool_config.function_calling_config.mode' "
                      f"(type.googleapis.com/google.ai.generativelanguage.v1beta."
                      f"FunctionCallingConfig.Mode), \"{mode}\"")
    allowed = calling.get("allowedFunctionNames")
    if allowed is not None:
        if mode not in ("ANY", "VALIDATED"):
            raise Invalid("* GenerateContentRequest.tool_config.function_calling_config."
                          "allowed_function_names: only allowed when mode is ANY")
        for name in allowed:
            if name not in names:
                raise Invalid(f"* GenerateContentRequest.tool_config.function_calling_config."
                              f"allowed_function_names: '{name}' is not a declared function")
    return names


def _generation(value: Any) -> dict[str, Any]:
    config = _fields(value, _GENERATION, "generation_config")
    ranges = {"temperature": (0, 2), "topP": (0, 1), "topK": (1, None),
              "maxOutputTokens": (1, None), "presencePenalty": (-2, 2),
              "frequencyPenalty": (-2, 2), "logprobs": (0, 20), "seed": (None, None)}
    for key, (low, high) in ranges.items():
        if key in config:
            _number(config[key], f"generation_config.{key}", low, high)
    count = config.get("candidateCount", 1)
    if not isinstance(count, int) or not 1 <= count <= 8:
        raise Invalid("* GenerateContentRequest.generation_config.candidate_count: "
                      "candidate_count must be in the range [1, 8]")
    stops = config.get("stopSequences", [])
    if not isinstance(stops, list) or len(stops) > 5:
        raise Invalid("* GenerateContentRequest.generation_config.stop_sequences: at most 5 "
                      "stop sequences are allowed")
    mime = config.get("responseMimeType", "text/plain")
    if mime not in _MIME_TYPES:
        raise Invalid(f"* GenerateContentRequest.generation_config.response_mime_type: "
                      f"allowed mimetypes are {sorted(_MIME_TYPES)}, got '{mime}'")
    if "responseSchema" in config:
        if mime not in ("application/json", "text/x.enum"):
            raise Invalid("* GenerateContentRequest.generation_config.response_schema: "
                          "response_mime_type must be application/json or text/x.enum")
        _schema(config["responseSchema"], "generation_config.response_schema")
    if "logprobs" in config and not config.get("responseLogprobs"):
        raise Invalid("* GenerateContentRequest.generation_config.logprobs: logprobs needs "
                      "response_logprobs")
    thinking = _fields(config.get("thinkingConfig", {}),
                       {"thinkingBudget", "includeThoughts", "thinkingLevel"},
                       "generation_config.thinking_config")
    if "thinkingBudget" in thinking:
        _number(thinking["thinkingBudget"], "generation_config.thinking_config.thinking_budget",
                -1, 32768)
    return config


def validate(body: Any) -> tuple[list[str], dict[str, Any]]:
    """Check a ``GenerateContentRequest``; return its declared functions and its config."""
    body = _fields(body, _REQUEST, "")
    _contents(body.get("contents"))
    if "systemInstruction" in body:
        system = _fields(body["systemInstruction"], {"role", "parts"}, "system_instruction")
        if not isinstance(system.get("parts"), list) or not system["parts"]:
            raise Invalid("* GenerateContentRequest.system_instruction.parts: must not be empty")
        for i, part in enumerate(system["parts"]):
            if "text" not in _part(part, f"system_instruction.parts[{i}]"):
                raise Invalid("* GenerateContentRequest.system_instruction: only text is "
                              "supported")
    for i, setting in enumerate(body.get("safetySettings") or ()):
        _fields(setting, {"category", "threshold", "method"}, f"safety_settings[{i}]")
    names = _tools(body)
    return names, _generation(body.get("generationConfig", {}))


# -- replies ----------------------------------------------------------------


def validate_embeddings(body: Any, model: str) -> tuple[list[str], int]:
    """A ``BatchEmbedContentsRequest``'s texts and output size, checked as the real API
    checks them: known fields only, 1 to 100 requests, each naming this model, with one
    non-empty text part, and an ``outputDimensionality`` from 1 to 3072."""
    requests = _fields(body, {"requests"}, "")
    batch = requests.get("requests")
    if not isinstance(batch, list) or not batch:
        raise Invalid("* BatchEmbedContentsRequest.requests: contents is not specified")
    if len(batch) > MAX_EMBED_BATCH:
        raise Invalid("* BatchEmbedContentsRequest.requests: at most 100 requests can be in "
                      "one batch")
    texts, sizes = [], set()
    for i, one in enumerate(batch):
        where = f"requests[{i}]"
        request = _fields(one, {"model", "content", "taskType", "title",
                                "outputDimensionality"}, where)
        if request.get("model") != f"models/{model}":
            raise Invalid(f"* BatchEmbedContentsRequest.{where}.model: the model in each "
                          f"request must be models/{model}")
        content = _fields(request.get("content"), {"parts", "role"}, f"{where}.content")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise Invalid(f"* BatchEmbedContentsRequest.{where}.content.parts: contents is "
                          "not specified")
        text = ""
        for j, part in enumerate(parts):
            _part(part, f"{where}.content.parts[{j}]")
            if "text" not in part:
                raise Invalid(f"* BatchEmbedContentsRequest.{where}.content.parts[{j}]: only "
                              "text can be embedded")
            text += part["text"]
        size = request.get("outputDimensionality", EMBEDDING_DIMENSIONS)
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 3072:
            raise Invalid(f"* BatchEmbedContentsRequest.{where}.output_dimensionality: must be "
                          "from 1 to 3072")
        texts.append(text)
        sizes.add(size)
    if len(sizes) != 1:
        raise Invalid("* BatchEmbedContentsRequest: every request must ask the same size")
    return texts, sizes.pop()


def embedding_of(text: str, size: int) -> list[float]:
    """The fake's embedding of a text: the first ``size`` values of a fixed-length,
    unit-length vector drawn from its hash (shortened ones are not normalized, as
    Gemini's are not)."""
    digest = b"".join(hashlib.sha256(f"{text}#{k}".encode()).digest() for k in range(24))
    values = [b - 127.5 for b in digest[:EMBEDDING_DIMENSIONS]]
    norm = sum(v * v for v in values) ** 0.5
    return [round(v / norm, 6) for v in values[:size]]


def _reply(body: dict[str, Any], names: list[str], config: dict[str, Any], model: str,
           script: Script) -> list[dict[str, Any]]:
    """The recorded events this request gets, adapted to it."""
    if script.block_prompt:
        return [{"promptFeedback": {"blockReason": script.block_prompt},
                 "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
                 "modelVersion": model}]
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if script.recording:
        name = script.recording
    elif config.get("responseMimeType") == "application/json":
        name = "gemini_json"
    elif names and calling.get("mode", "AUTO") != "NONE":
        name = "gemini_function_call"
    elif (config.get("thinkingConfig") or {}).get("includeThoughts") is True:
        name = "gemini_thinking"
    else:
        name = "gemini_text"
    events = load_recording(name)
    n = config.get("candidateCount", 1)
    target = (calling.get("allowedFunctionNames") or names or [None])[0]
    for event in events:
        event["modelVersion"] = model
        candidates = []
        for candidate in event.get("candidates") or ():
            for part in (candidate.get("content") or {}).get("parts") or ():
                call = part.get("functionCall")
                if call is not None and call.get("name") not in names and target:
                    call["name"] = target
            candidates += [{**copy.deepcopy(candidate), "index": i} for i in range(n)]
        if "candidates" in event:
            event["candidates"] = candidates
        usage = event.get("usageMetadata") or {}
        if "candidatesTokenCount" in usage:
            usage["candidatesTokenCount"] *= n
            usage["totalTokenCount"] = sum(usage.get(k, 0) for k in (
                "promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount"))
    return events


def _merged(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The one ``GenerateContentResponse`` that ``generateContent`` answers."""
    out: dict[str, Any] = {}
    candidates: dict[int, dict[str, Any]] = {}
    for event in events:
        for candidate in event.get("candidates") or ():
            merged = candidates.setdefault(candidate.get("index", 0), {
                "content": {"parts": [], "role": "model"}, "index": candidate.get("index", 0)})
            for part in (candidate.get("content") or {}).get("parts") or ():
                parts = merged["content"]["parts"]
                if "text" in part and parts and "text" in parts[-1] \
                        and part.get("thought") == parts[-1].get("thought"):
                    parts[-1]["text"] += part["text"]
                else:
                    parts.append(dict(part))
            if "finishReason" in candidate:
                merged["finishReason"] = candidate["finishReason"]
        out.update({k: v for k, v in event.items() if k != "candidates"})
    if candidates:
        out["candidates"] = [candidates[i] for i in sorted(candidates)]
    return out


def make_app(script: Script) -> web.Application:
    """The fake's application; ``script`` may be changed between requests."""

    def authorised(request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return error_response(
                403, "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.")
        if key != script.api_key:
            message = "API key not valid. Please pass a valid API key."
            return error_response(400, message, details=[
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com",
                 "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                 "message": message}])
        return None

    def scripted() -> web.Response | None:
        if script.status is None:
            return None
        status = script.status
        if script.fail_next:
            script.fail_next -= 1
            if not script.fail_next:
                script.status = None  # the scripted failures are used up
        details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": script.retry_delay}] if script.retry_delay else None
        return error_response(status, script.message, details=details,
                              retry_after=script.retry_after)

    async def embed(request: web.Request, model: str) -> web.Response:
        if (refusal := authorised(request)) is not None:
            return refusal
        if model not in script.embedding_models:
            return error_response(404, f"models/{model} is not found for API version v1beta, "
                                  "or is not supported for batchEmbedContents.")
        script.urls.append(request.path_qs)
        if script.delay:
            await asyncio.sleep(script.delay)
        if (failure := scripted()) is not None:
            return failure
        try:
            body = json.loads(await request.read())
        except ValueError:
            return error_response(400, "Invalid JSON payload received. Unexpected token.")
        try:
            texts, size = validate_embeddings(body, model)
        except Invalid as exc:
            return error_response(400, str(exc))
        script.requests.append(body)
        answer: dict[str, Any] = {
            "embeddings": [{"values": embedding_of(text, size)} for text in texts]}
        if script.usage_metadata:
            answer["usageMetadata"] = {
                "promptTokenCount": sum(len(text.split()) for text in texts)}
        return web.json_response(answer)

    async def generate(request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].rpartition(":")
        if method == "batchEmbedContents" and model:
            return await embed(request, model)
        if method not in ("generateContent", "streamGenerateContent") or not model:
            return error_response(404, f"Method '{method}' is not found for models/{model}.")
        if (refusal := authorised(request)) is not None:
            return refusal
        if model not in script.models:
            return error_response(404, f"models/{model} is not found for API version v1beta, "
                                  "or is not supported for generateContent.")
        script.urls.append(request.path_qs)
        if script.delay:
            await asyncio.sleep(script.delay)
        if (failure := scripted()) is not None:
            return failure
        try:
            body = json.loads(await request.read())
        except ValueError:
            return error_response(400, "Invalid JSON payload received. Unexpected token.")
        try:
            names, config = validate(body)
        except Invalid as exc:
            return error_response(400, str(exc))
        script.requests.append(body)
        events = _reply(body, names, config, model, script)
        if method == "generateContent":
            return web.json_response(_merged(events))
        sse = request.query.get("alt") == "sse"
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream" if sse else "application/json"})
        await response.prepare(request)
        try:
            for n, event in enumerate(events):
                if n == script.die_after:
                    assert request.transport is not None
                    request.transport.close()  # what was written goes out, then the socket
                    return response
                if n == script.error_after:
                    event = {"error": {"code": 503, "message": "The model is overloaded.",
                                       "status": "UNAVAILABLE"}}
                if script.chunk_delay and n:
                    await asyncio.sleep(script.chunk_delay)
                text = json.dumps(event)
                await response.write(
                    f"data: {text}\r\n\r\n".encode() if sse
                    else f"{'[' if n == 0 else ','}{text}\r\n".encode())
                if n == script.error_after:
                    break  # Google ends the stream after an error
            if not sse:
                await response.write(b"]")
        except (ConnectionResetError, asyncio.CancelledError):
            script.disconnects += 1
            script.disconnected.set()
            raise
        return response

    async def models(request: web.Request) -> web.Response:
        if (refusal := authorised(request)) is not None:
            return refusal
        return web.json_response({"models": [
            {"name": f"models/{name}",
             "supportedGenerationMethods": ["generateContent", "countTokens"]}
            for name in sorted(script.models)]})

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=tiny_png(), content_type="image/png")

    app = web.Application()
    app.router.add_post("/v1beta/models/{target}", generate)
    app.router.add_get("/v1beta/models", models)
    app.router.add_get("/image.png", image)
    return app


@asynccontextmanager
async def serve(script: Script) -> AsyncIterator[str]:
    """Run the fake on a free port of 127.0.0.1 and yield its base URL."""
    runner = web.AppRunner(make_app(script), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
