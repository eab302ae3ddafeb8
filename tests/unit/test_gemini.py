"""The gemini backend: request translation, stream translation, and the wire against a strict fake."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kathan.backends.base import Delta, DeltaStream, TokenUsage, ToolCallDelta
from kathan.backends.gemini import (
    FOREIGN_SIGNATURE,
    GeminiBackend,
    StreamTranslator,
    to_gemini,
    to_gemini_schema,
)
from kathan.backends.http1 import HTTPPool
from kathan.backends.upstream import Deployment, UpstreamError
from kathan.errors import InvalidRequestError, UnsupportedParameterError
from kathan.protocol.chat import ChatCompletionRequest
from tests.upstreams.gemini_fake import (
    API_KEY,
    Invalid,
    Script,
    load_recording,
    serve,
    tiny_png,
    validate,
)

PNG = tiny_png()
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
CALL_ID = re.compile(r"^call_[0-9a-f]{24}$")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_temperature",
        "description": "The temperature at a place.",
        "parameters": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "A city."},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def chat(**fields: Any) -> ChatCompletionRequest:
    fields.setdefault("model", "gemini")
    fields.setdefault("messages", [{"role": "user", "content": "Hello"}])
    return ChatCompletionRequest.model_validate(fields)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def pool() -> AsyncIterator[HTTPPool]:
    async with HTTPPool() as p:
        yield p


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
async def base_url(script: Script) -> AsyncIterator[str]:
    async with serve(script) as url:
        yield url


def backend(
    base_url: str, session: aiohttp.ClientSession, pool: HTTPPool, **deployment: Any
) -> GeminiBackend:
    deployment.setdefault("api_key", API_KEY)
    deployment.setdefault("model", "gemini-2.5-flash")
    return GeminiBackend(
        Deployment(backend="gemini", base_url=base_url, **deployment),
        session, pool, allow_private_fetch=True,
    )


async def translate(request: ChatCompletionRequest, session: aiohttp.ClientSession,
                    allow_private: bool = False) -> dict[str, Any]:
    body = await to_gemini(request, session=session, allow_private_fetch=allow_private)
    validate(json.loads(json.dumps(body)))  # the strict fake accepts what Kathan sends
    return body


async def collect(stream: DeltaStream) -> list[Delta]:
    async with stream:
        return [d async for d in stream]


def feed(translator: StreamTranslator, chunk: dict[str, Any]) -> list[Delta]:
    return translator.feed(None, json.dumps(chunk))


def text_of(deltas: list[Delta], index: int = 0) -> str:
    return "".join(d.content or "" for d in deltas if d.index == index and d.usage is None)


def recorded_text(name: str) -> str:
    return "".join(
        p.get("text", "") for e in load_recording(name) for c in e["candidates"]
        for p in c["content"]["parts"]
    )


# -- request translation ------------------------------------------------------


async def test_full_conversation(session: aiohttp.ClientSession, base_url: str) -> None:
    request = chat(
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these pictures, and how warm is Paris?"},
                {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}},
                {"type": "image_url", "image_url": {"url": f"{base_url}/image.png"}},
            ], "name": "ann"},
            {"role": "assistant", "content": "Two dots. Checking the weather.", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {
                    "name": "get_current_temperature", "arguments": '{"location": "Paris"}'}},
                {"id": "call_b", "type": "function", "function": {
                    "name": "get_current_temperature", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": '{"celsius": 21}'},
            {"role": "tool", "tool_call_id": "call_b", "content": [
                {"type": "text", "text": "unknown place"}]},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "You are welcome."},
            {"role": "user", "content": "Bye"},
        ],
        tools=[WEATHER],
    )
    body = await translate(request, session, allow_private=True)
    inline = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}}
    assert body["systemInstruction"] == {
        "parts": [{"text": "You are terse."}, {"text": "Use metric units."}]
    }
    assert body["contents"] == [
        {"role": "user", "parts": [
            {"text": "What is in these pictures, and how warm is Paris?"}, inline, inline]},
        {"role": "model", "parts": [
            {"text": "Two dots. Checking the weather."},
            {"functionCall": {"name": "get_current_temperature", "args": {"location": "Paris"}},
             "thoughtSignature": FOREIGN_SIGNATURE},
            {"functionCall": {"name": "get_current_temperature", "args": {}}},
        ]},
        {"role": "user", "parts": [  # both results and the next user message: one turn
            {"functionResponse": {"name": "get_current_temperature",
                                  "response": {"celsius": 21}}},
            {"functionResponse": {"name": "get_current_temperature",
                                  "response": {"content": "unknown place"}}},
            {"text": "Thanks!"},
        ]},
        {"role": "model", "parts": [{"text": "You are welcome."}]},
        {"role": "user", "parts": [{"text": "Bye"}]},
    ]
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "get_current_temperature",
        "description": "The temperature at a place.",
        "parameters": {
            "type": "OBJECT",
            "properties": {
                "location": {"type": "STRING", "description": "A city."},
                "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    }]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert "generationConfig" not in body


async def test_legacy_functions(session: aiohttp.ClientSession) -> None:
    request = chat(
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "function_call": {
                "name": "get_current_temperature", "arguments": '{"location": "Oslo"}'}},
            {"role": "function", "name": "get_current_temperature", "content": "-3"},
        ],
        functions=[WEATHER["function"]],
        function_call={"name": "get_current_temperature"},
    )
    body = await translate(request, session)
    assert body["contents"][1:] == [
        {"role": "model", "parts": [
            {"functionCall": {"name": "get_current_temperature", "args": {"location": "Oslo"}},
             "thoughtSignature": FOREIGN_SIGNATURE}]},
        {"role": "user", "parts": [{"functionResponse": {
            "name": "get_current_temperature", "response": {"content": "-3"}}}]},
    ]
    assert body["tools"][0]["functionDeclarations"][0]["name"] == "get_current_temperature"
    assert body["toolConfig"] == {"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["get_current_temperature"]}}


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("none", {"mode": "NONE"}),
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "get_current_temperature"}},
         {"mode": "ANY", "allowedFunctionNames": ["get_current_temperature"]}),
    ],
)
async def test_tool_choice(
    choice: Any, config: dict[str, Any], session: aiohttp.ClientSession
) -> None:
    body = await translate(chat(tools=[WEATHER], tool_choice=choice), session)
    assert body["toolConfig"] == {"functionCallingConfig": config}


async def test_tool_choice_naming_an_unknown_function(session: aiohttp.ClientSession) -> None:
    request = chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "x"}})
    with pytest.raises(InvalidRequestError) as info:
        await to_gemini(request, session=session)
    assert info.value.param == "tool_choice"


async def test_function_without_parameters(session: aiohttp.ClientSession) -> None:
    tools = [{"type": "function", "function": {"name": "now"}},
             {"type": "function", "function": {"name": "ping", "parameters": {
                 "type": "object", "properties": {}}}}]
    body = await translate(chat(tools=tools), session)
    assert body["tools"] == [{"functionDeclarations": [{"name": "now"}, {"name": "ping"}]}]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": "hi"},
          {"role": "tool", "tool_call_id": "nope", "content": "x"}], "messages[1].tool_call_id"),
        ([{"role": "user", "content": "hi"},
          {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
              "name": "f", "arguments": "{not json"}}]}],
         "messages[1].tool_calls[0].function.arguments"),
        ([{"role": "user", "content": "hi"},
          {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
              "name": "f", "arguments": "[1, 2]"}}]}],
         "messages[1].tool_calls[0].function.arguments"),
        ([{"role": "system", "content": "only this"}, {"role": "user", "content": ""}],
         "messages"),
        ([{"role": "user", "content": [
            {"type": "text", "text": "see"},
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}]}],
         "messages[0].content[1].image_url.url"),
        ([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}}]}],
         "messages[0].content[0].image_url.url"),
    ],
)
async def test_conversation_errors_name_the_field(
    messages: list[dict[str, Any]], param: str, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await to_gemini(chat(messages=messages), session=session)
    assert info.value.param == param
    assert info.value.status_code == 400


async def test_images_share_one_budget(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kathan.backends.gemini.MAX_INLINE_BYTES", 100)
    image = "data:image/png;base64," + base64.b64encode(b"x" * 60).decode()
    parts = [{"type": "image_url", "image_url": {"url": image}}] * 2
    with pytest.raises(InvalidRequestError) as info:
        await to_gemini(chat(messages=[{"role": "user", "content": parts}]), session=session)
    assert info.value.param == "messages[0].content[1].image_url.url"


async def test_generation_config(session: aiohttp.ClientSession) -> None:
    request = chat(
        temperature=0.3, top_p=0.9, top_k=40, max_tokens=50, max_completion_tokens=60,
        stop="END", n=2, presence_penalty=0.5, frequency_penalty=-0.5, seed=7,
        logprobs=True, top_logprobs=3, user="u-1",
    )
    body = await translate(request, session)
    assert body["generationConfig"] == {
        "temperature": 0.3, "topP": 0.9, "topK": 40, "maxOutputTokens": 60,
        "stopSequences": ["END"], "candidateCount": 2, "presencePenalty": 0.5,
        "frequencyPenalty": -0.5, "seed": 7, "responseLogprobs": True, "logprobs": 3,
    }
    body = await translate(chat(max_tokens=50, stop=["a", "b"], top_k=0), session)
    assert body["generationConfig"] == {"maxOutputTokens": 50, "stopSequences": ["a", "b"]}


@pytest.mark.parametrize(
    ("effort", "budget"),
    [("none", 0), ("minimal", 512), ("low", 1024), ("medium", 8192), ("high", 24576),
     ("xhigh", 32768)],
)
async def test_reasoning_effort(effort: str, budget: int, session: aiohttp.ClientSession) -> None:
    body = await translate(chat(reasoning_effort=effort), session)
    # Thinking that is asked for is shown (its summaries); "none" asks for none.
    shown = {"includeThoughts": True} if effort != "none" else {}
    assert body["generationConfig"] == {"thinkingConfig": {"thinkingBudget": budget, **shown}}


async def test_response_format(session: aiohttp.ClientSession) -> None:
    body = await translate(chat(response_format={"type": "text"}), session)
    assert "generationConfig" not in body
    body = await translate(chat(response_format={"type": "json_object"}), session)
    assert body["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {
        "type": "object",
        "properties": {
            "recipes": {"type": "array", "items": {"$ref": "#/$defs/Recipe"}, "minItems": 1},
        },
        "required": ["recipes"],
        "additionalProperties": False,
        "$defs": {"Recipe": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "minutes": {"type": ["integer", "null"], "exclusiveMinimum": 0},
                "kind": {"const": "dessert"},
            },
            "required": ["name", "minutes", "kind"],
            "additionalProperties": False,
        }},
    }
    request = chat(response_format={"type": "json_schema", "json_schema": {
        "name": "recipes", "strict": True, "schema": schema}})
    body = await translate(request, session)
    recipe = {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING", "minLength": 1},
            "minutes": {"type": "INTEGER", "nullable": True},
            "kind": {"type": "STRING", "enum": ["dessert"]},
        },
        "required": ["name", "minutes", "kind"],
    }
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {"recipes": {"type": "ARRAY", "minItems": 1, "items": recipe}},
            "required": ["recipes"],
        },
    }


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"anyOf": [{"type": "string"}, {"type": "null"}], "description": "d"},
         {"type": "STRING", "description": "d", "nullable": True}),
        ({"oneOf": [{"type": "string"}, {"type": "number", "format": "double"}]},
         {"anyOf": [{"type": "STRING"}, {"type": "NUMBER", "format": "double"}]}),
        ({"type": ["string", "integer"]}, {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}),
        ({"type": "string", "format": "uri", "examples": ["x"]}, {"type": "STRING"}),
        ({"type": "string", "format": "date-time"}, {"type": "STRING", "format": "date-time"}),
        ({"type": "integer", "enum": [1, 2], "multipleOf": 1}, {"type": "INTEGER"}),
        ({"enum": ["a", None]}, {"type": "STRING", "enum": ["a"], "nullable": True}),
        ({"allOf": [{"type": "boolean"}], "title": "t"}, {"type": "BOOLEAN", "title": "t"}),
        ({"type": "object", "properties": {"a": {"$ref": "#/definitions/A", "description": "x"}},
          "definitions": {"A": {"type": "string", "description": "y"}}, "required": ["a", "b"]},
         {"type": "OBJECT", "properties": {"a": {"type": "STRING", "description": "x"}},
          "required": ["a"]}),
        ({"items": {"type": "string"}, "uniqueItems": True},
         {"type": "ARRAY", "items": {"type": "STRING"}}),
        ({"properties": {"a": {"enum": ["x", "y"]}, "b": {}}},
         {"type": "OBJECT", "properties": {"a": {"type": "STRING", "enum": ["x", "y"]}, "b": {}}}),
    ],
)
def test_schema_conversion(schema: dict[str, Any], expected: dict[str, Any]) -> None:
    assert to_gemini_schema(schema, param="p") == expected


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object", "properties": {
            "next": {"$ref": "#/$defs/Node"}}}}},
        {"$ref": "https://example.com/schema.json"},
        {"$ref": "#/$defs/Missing"},
        {"not": {"type": "string"}},
        {"allOf": [{"type": "object"}, {"required": ["a"]}]},
        {"type": "array", "items": [{"type": "string"}]},
        {"type": "tuple"},
        {"type": "object", "properties": {"a": False}},
        {"type": "object", "properties": {"tags": {"type": "array"}}},
        {"type": "array", "items": True},
    ],
)
def test_schema_refusals(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_gemini_schema(schema, param="tools[0].function.parameters")
    assert info.value.param == "tools[0].function.parameters"
    assert info.value.code == "invalid_json_schema"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logit_bias", {"42": 5}),
        ("repetition_penalty", 1.1),
        ("min_p", 0.1),
    ],
)
async def test_unsupported_parameters(
    field: str, value: Any, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(UnsupportedParameterError) as info:
        await to_gemini(chat(**{field: value}), session=session)
    assert info.value.param == field
    assert info.value.status_code == 400
    assert f"'{field}' is not supported by the gemini backend" in info.value.message


async def test_top_logprobs_needs_logprobs(session: aiohttp.ClientSession) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await to_gemini(chat(top_logprobs=2), session=session)
    assert info.value.param == "top_logprobs"


# -- stream translation -------------------------------------------------------


def replay(name: str, translator: StreamTranslator, n: int = 1) -> list[Delta]:
    out: list[Delta] = []
    for event in load_recording(name):
        event["candidates"] = [{**c, "index": i} for c in event["candidates"] for i in range(n)]
        out += feed(translator, event)
    return out + translator.finish()


def test_translates_the_text_recording() -> None:
    deltas = replay("gemini_text", StreamTranslator())
    assert [d.content for d in deltas[:4]] == [
        "AI learns", " patterns from examples", " instead of following", " hand-written rules."]
    assert deltas[4] == Delta(0, finish_reason="stop")
    assert deltas[5] == Delta(usage=TokenUsage(prompt_tokens=5, completion_tokens=36,
                                               cached_tokens=2, reasoning_tokens=24))
    assert len(deltas) == 6


def test_translates_the_function_call_recording() -> None:
    deltas = replay("gemini_function_call", StreamTranslator())
    first, finish, usage = deltas
    opening, arguments = first.tool_calls
    assert first.content is None
    assert opening.index == 0 and opening.name == "get_current_temperature"
    assert opening.id is not None and CALL_ID.match(opening.id)
    assert arguments == ToolCallDelta(0, arguments='{"location": "London"}')
    assert finish == Delta(0, finish_reason="tool_calls")
    assert usage.usage == TokenUsage(56, 17 + 56, 0, reasoning_tokens=56)


def test_translates_the_json_recording() -> None:
    deltas = replay("gemini_json", StreamTranslator())
    assert json.loads(text_of(deltas))[1]["recipeName"] == "Peanut Butter Cookies"
    assert deltas[-1].usage == TokenUsage(11, 40, 0)


def test_two_candidates_then_usage_at_the_very_end() -> None:
    deltas = replay("gemini_text", StreamTranslator(n=2), n=2)
    assert text_of(deltas, 0) == text_of(deltas, 1) == recorded_text("gemini_text")
    finishes = [d for d in deltas if d.finish_reason]
    assert [(d.index, d.finish_reason) for d in finishes] == [(0, "stop"), (1, "stop")]
    assert deltas[-1].usage is not None
    assert all(d.usage is None for d in deltas[:-1])
    assert deltas.index(finishes[-1]) < len(deltas) - 1
    calls = replay("gemini_function_call", StreamTranslator(n=2), n=2)
    ids = {c.id for d in calls for c in d.tool_calls if c.id}
    assert len(ids) == 2  # each choice's call has its own id


def test_translates_the_thinking_recording() -> None:
    deltas = replay("gemini_thinking", StreamTranslator())
    reasoning = "".join(d.reasoning or "" for d in deltas)
    assert reasoning.startswith("**Calculating the sum**") and "129" in reasoning
    assert text_of(deltas) == "The sum of the first 10 prime numbers is 129."
    assert not any(d.reasoning and d.content for d in deltas)
    assert deltas[-1] == Delta(usage=TokenUsage(12, 11 + 375, 0, reasoning_tokens=375))


def test_thoughts_are_reasoning_and_finish_reasons_mapped() -> None:
    t = StreamTranslator(n=4)
    deltas = feed(t, {"candidates": [
        {"index": 0, "content": {"parts": [
            {"text": "Let me think", "thought": True}, {"text": "Answer"}]},
         "finishReason": "MAX_TOKENS"},
        {"index": 1, "content": {"parts": [{"text": "Blocked"}]}, "finishReason": "SAFETY"},
        {"index": 2, "finishReason": "RECITATION"},
        {"index": 3, "finishReason": "MALFORMED_FUNCTION_CALL"},
    ]})
    assert [(d.index, d.reasoning, d.content, d.finish_reason) for d in deltas] == [
        (0, "Let me think", None, None), (0, None, "Answer", None), (0, None, None, "length"),
        (1, None, "Blocked", None),
        (1, None, None, "content_filter"), (2, None, None, "content_filter"),
        (3, None, None, "stop"),
    ]
    assert t.finish() == []  # no usageMetadata, no usage delta


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    chunk = {"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "a", "args": {"x": 1}}},
        {"functionCall": {"name": "b", "args": {}}},
    ]}, "finishReason": "STOP"}]}
    several = feed(StreamTranslator(), json.loads(json.dumps(chunk)))
    assert [c.name for c in several[0].tool_calls if c.name] == ["a", "b"]
    assert [c.index for c in several[0].tool_calls] == [0, 0, 1, 1]
    one = feed(StreamTranslator(parallel_tool_calls=False), chunk)
    assert [c.name for c in one[0].tool_calls if c.name] == ["a"]


def test_logprobs_are_mapped() -> None:
    deltas = feed(StreamTranslator(), {"candidates": [{
        "content": {"parts": [{"text": "Hi"}]},
        "logprobsResult": {
            "chosenCandidates": [{"token": "Hi", "tokenId": 1, "logProbability": -0.1}],
            "topCandidates": [{"candidates": [
                {"token": "Hi", "logProbability": -0.1}, {"token": "Hey", "logProbability": -2.5},
            ]}],
        },
    }]})
    (entry,) = deltas[0].logprobs
    assert (entry.token, entry.logprob, entry.bytes) == ("Hi", -0.1, [72, 105])
    assert [(t.token, t.logprob) for t in entry.top_logprobs] == [("Hi", -0.1), ("Hey", -2.5)]


def test_blocked_prompt_and_error_events_raise() -> None:
    with pytest.raises(UpstreamError) as info:
        feed(StreamTranslator(), {"promptFeedback": {"blockReason": "SAFETY"}})
    assert (info.value.status_code, info.value.retryable) == (400, False)
    assert "blocked" in info.value.message
    with pytest.raises(UpstreamError) as info:
        feed(StreamTranslator(), {"error": {"code": 503, "message": "overloaded",
                                            "status": "UNAVAILABLE"}})
    assert info.value.status_code == 503


def test_a_stream_without_finish_raises() -> None:
    t = StreamTranslator(n=2)
    feed(t, {"candidates": [{"index": 0, "content": {"parts": [{"text": "a"}]},
                             "finishReason": "STOP"}]})
    with pytest.raises(UpstreamError) as info:
        t.finish()
    assert (info.value.status_code, info.value.retryable) == (503, False)
    assert "choice 1" in info.value.message


# -- the backend against the fake ---------------------------------------------


async def test_text(
    script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    deltas = await collect(await backend(base_url, session, pool).open(chat()))
    assert text_of(deltas) == recorded_text("gemini_text")
    assert deltas[-2:] == [Delta(0, finish_reason="stop"),
                           Delta(usage=TokenUsage(5, 36, 2, reasoning_tokens=24))]
    assert script.urls == ["/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"]
    assert script.requests == [{"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}]


async def test_asked_for_thinking_comes_as_reasoning(
    script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    request = chat(reasoning_effort="low")
    deltas = await collect(await backend(base_url, session, pool).open(request))
    assert script.requests[0]["generationConfig"] == {
        "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}}
    assert "".join(d.reasoning or "" for d in deltas).startswith("**Calculating the sum**")
    assert text_of(deltas) == "The sum of the first 10 prime numbers is 129."
    assert deltas[-1].usage is not None and deltas[-1].usage.reasoning_tokens == 375


async def test_function_call(
    script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    request = chat(tools=[WEATHER], messages=[
        {"role": "user", "content": [{"type": "text", "text": "How warm is it here?"},
                                     {"type": "image_url", "image_url": {
                                         "url": f"{base_url}/image.png"}}]}])
    deltas = await collect(await backend(base_url, session, pool).open(request))
    calls = [c for d in deltas for c in d.tool_calls]
    assert calls[0].name == "get_current_temperature"
    assert json.loads("".join(c.arguments for c in calls)) == {"location": "London"}
    assert deltas[-2].finish_reason == "tool_calls"
    sent = script.requests[0]["contents"][0]["parts"][1]["inlineData"]
    assert base64.b64decode(sent["data"]) == PNG


async def test_a_whole_tool_round_trip_is_accepted(
    script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    first = await collect(await backend(base_url, session, pool).open(chat(tools=[WEATHER])))
    call = next(c for d in first for c in d.tool_calls if c.id)
    request = chat(tools=[WEATHER], tool_choice="none", messages=[
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "tool_calls": [{"id": call.id, "type": "function", "function": {
            "name": call.name, "arguments": '{"location": "London"}'}}]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 12}'},
    ])
    second = await collect(await backend(base_url, session, pool).open(request))
    assert text_of(second) == recorded_text("gemini_text")


async def test_json_mode(
    script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    request = chat(response_format={"type": "json_schema", "json_schema": {
        "name": "recipes", "schema": {"type": "array", "items": {
            "type": "object", "properties": {"recipeName": {"type": "string"}}}}}})
    deltas = await collect(await backend(base_url, session, pool).open(request))
    assert json.loads(text_of(deltas))[0]["recipeName"] == "Chocolate Chip Cookies"
    assert script.requests[0]["generationConfig"]["responseSchema"]["type"] == "ARRAY"


async def test_n_candidates(
    script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    deltas = await collect(await backend(base_url, session, pool).open(chat(n=3)))
    assert {d.index for d in deltas if d.finish_reason} == {0, 1, 2}
    assert text_of(deltas, 2) == recorded_text("gemini_text")


@pytest.mark.parametrize(
    ("key", "status", "upstream"),
    [(None, None, 403), ("wrong-key", None, 401), (API_KEY, 401, 401), (API_KEY, 403, 403)],
)
async def test_credential_failures_are_503_not_retryable(
    key: str | None, status: int | None, upstream: int, script: Script, base_url: str,
    session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    script.status = status
    with pytest.raises(UpstreamError) as info:
        await backend(base_url, session, pool, api_key=key).open(chat())
    error = info.value
    assert (error.status_code, error.retryable, error.upstream_status) == (503, False, upstream)
    assert error.code == "upstream_auth_failed"


async def test_rate_limited_is_retryable_with_retry_after(
    script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    script.status, script.retry_after, script.fail_next = 429, 7, 1
    with pytest.raises(UpstreamError) as info:
        await backend(base_url, session, pool).open(chat())
    assert (info.value.status_code, info.value.retryable, info.value.retry_after) == (429, True, 7)
    assert info.value.headers["Retry-After"] == "7"
    script.status, script.retry_after, script.retry_delay = 429, None, "12.5s"
    with pytest.raises(UpstreamError) as info:
        await backend(base_url, session, pool).open(chat())
    assert info.value.retry_after == 13  # Google's RetryInfo, when no header says otherwise


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retryable(
    status: int, script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    script.status = status
    with pytest.raises(UpstreamError) as info:
        await backend(base_url, session, pool).open(chat())
    assert (info.value.status_code, info.value.retryable) == (503, True)
    assert info.value.upstream_status == status


async def test_a_request_the_upstream_refuses_is_the_clients_400(
    script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    with pytest.raises(UpstreamError) as info:
        await backend(base_url, session, pool).open(chat(n=9))
    error = info.value
    assert (error.status_code, error.retryable, error.error_type) == (
        400, False, "invalid_request_error")
    assert "candidate_count" in error.message
    assert script.requests == []


async def test_a_blocked_prompt_is_a_400_before_any_output(
    script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    script.block_prompt = "PROHIBITED_CONTENT"
    with pytest.raises(UpstreamError) as info:
        await backend(base_url, session, pool).open(chat())
    assert (info.value.status_code, info.value.code) == (400, "prompt_blocked")


async def test_death_mid_stream_raises_after_some_deltas(
    script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    script.die_after = 2
    got: list[Delta] = []
    async with await backend(base_url, session, pool).open(chat()) as deltas:
        with pytest.raises(UpstreamError) as info:
            async for delta in deltas:
                got.append(delta)
    assert text_of(got) == "AI learns patterns from examples"
    assert (info.value.status_code, info.value.retryable) == (503, False)


async def test_closing_early_closes_the_upstream_connection(
    script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    script.chunk_delay = 0.3
    deltas = await backend(base_url, session, pool).open(chat())
    assert (await anext(deltas)).content == "AI learns"
    await deltas.aclose()
    await asyncio.wait_for(script.disconnected.wait(), 5)
    assert script.disconnects == 1


async def test_transport_failures_are_retryable(
    script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    script.delay = 1.0
    with pytest.raises(UpstreamError) as info:
        await backend(base_url, session, pool, read_timeout=0.1).open(chat())
    assert (info.value.status_code, info.value.retryable, info.value.upstream_status) == (
        503, True, None)
    with pytest.raises(UpstreamError) as info:
        await backend("http://127.0.0.1:9", session, pool).open(chat())
    assert (info.value.code, info.value.retryable) == ("upstream_unreachable", True)


async def test_an_unknown_model_is_a_404(
    script: Script, base_url: str, session: aiohttp.ClientSession, pool: HTTPPool
) -> None:
    gemini = GeminiBackend(
        Deployment(backend="gemini", model="models/gemini-2.5-flash", base_url=base_url + "/",
                   api_key=API_KEY), session, pool)
    assert gemini.url == f"{base_url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert gemini.ready and gemini.stats() is None
    with pytest.raises(UpstreamError) as info:
        await backend(base_url, session, pool, model="gemini-0-nope").open(chat())
    assert (info.value.status_code, info.value.error_type) == (404, "not_found_error")


# -- the fake itself is as strict as the real API -----------------------------


def _valid(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    body.update(fields)
    return body


_CALL = {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}
_ANSWER = {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
_DECLARED = [{"functionDeclarations": [{"name": "f"}]}]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (_valid(temperatur=1), 'Unknown name "temperatur"'),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": [{"role": "user", "parts": []}]}, "must not be empty"),
        ({"contents": [{"role": "user", "parts": [{"text": ""}]}]}, "oneof field 'data'"),
        ({"contents": [{"role": "user", "parts": [{"thought": True}]}]}, "oneof field 'data'"),
        ({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "*"}}]}]},
         "Base64"),
        ({"contents": [_valid()["contents"][0], _ANSWER]}, "immediately after a function call"),
        ({"contents": [_valid()["contents"][0], _CALL,
                       {"role": "user", "parts": [{"functionResponse": {
                           "name": "g", "response": {}}}]}]}, "answers no call"),
        ({"contents": [_CALL, _ANSWER]}, "function call turn comes immediately after"),
        (_valid(tools=_DECLARED, toolConfig={"functionCallingConfig": {"mode": "SOMETIMES"}}),
         "mode"),
        (_valid(tools=_DECLARED, toolConfig={"functionCallingConfig": {
            "mode": "AUTO", "allowedFunctionNames": ["f"]}}), "only allowed when mode is ANY"),
        (_valid(tools=_DECLARED, toolConfig={"functionCallingConfig": {
            "mode": "ANY", "allowedFunctionNames": ["g"]}}), "not a declared function"),
        (_valid(tools=[{"functionDeclarations": [{"name": "f", "parameters": {
            "type": "object", "properties": {"a": {"type": "string"}},
            "additionalProperties": False}}]}]), 'Unknown name "additionalProperties"'),
        (_valid(tools=[{"functionDeclarations": [{"name": "f", "parameters": {
            "type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}}]}]),
         'Unknown name "$ref"'),
        (_valid(tools=[{"functionDeclarations": [{"name": "f", "parameters": {
            "type": "object", "properties": {}}}]}]), "should be non-empty"),
        (_valid(tools=[{"functionDeclarations": [{"name": "1f"}]}]), "Invalid function name"),
        (_valid(generationConfig={"responseSchema": {"type": "STRING"}}),
         "response_mime_type must be"),
        (_valid(generationConfig={"responseMimeType": "application/json", "responseSchema": {
            "type": "OBJECT", "properties": {"a": {"type": "STRING"}},
            "required": ["b"]}}), "property is not defined"),
        (_valid(generationConfig={"candidateCount": 9}), "candidate_count"),
        (_valid(generationConfig={"logprobs": 2}), "response_logprobs"),
        (_valid(generationConfig={"stopSequences": ["a"] * 6}), "at most 5"),
    ],
)
def test_the_fake_refuses_what_gemini_refuses(body: dict[str, Any], says: str) -> None:
    with pytest.raises(Invalid) as info:
        validate(body)
    assert says in str(info.value)


async def test_the_fakes_other_framings_and_key_in_the_query(
    script: Script, base_url: str, session: aiohttp.ClientSession
) -> None:
    url = f"{base_url}/v1beta/models/gemini-2.5-flash"
    body = _valid()
    async with session.post(f"{url}:generateContent?key={API_KEY}", json=body) as response:
        whole = await response.json()
    assert whole["candidates"][0]["content"]["parts"] == [{"text": recorded_text("gemini_text")}]
    assert whole["candidates"][0]["finishReason"] == "STOP"
    headers = {"x-goog-api-key": API_KEY}
    async with session.post(f"{url}:streamGenerateContent", json=body,
                            headers=headers) as response:
        events = json.loads(await response.text())  # one JSON array without alt=sse
    assert len(events) == len(load_recording("gemini_text"))
    async with session.post(f"{url}:countTokens", json=body, headers=headers) as response:
        assert response.status == 404
        assert (await response.json())["error"]["status"] == "NOT_FOUND"
