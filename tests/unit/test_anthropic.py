"""The anthropic backend: request translation, stream translation, and the wire
against a strict fake of Anthropic's Messages API."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kathan.backends.anthropic import AnthropicBackend, StreamTranslator, to_anthropic
from kathan.backends.base import Delta, DeltaStream, TokenUsage, ToolCallDelta
from kathan.backends.http1 import HTTPPool
from kathan.backends.upstream import Deployment, UpstreamError
from kathan.errors import InvalidRequestError, UnsupportedParameterError
from kathan.protocol.chat import ChatCompletionRequest
from tests.upstreams.anthropic_fake import STATE, Script, load_recording, make_app, serve

KEY = "sk-ant-test"
DEPLOYMENT = Deployment("anthropic", "claude-test-1", base_url="http://unused", api_key=KEY)
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
    "AAAABJRU5ErkJggg=="
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather at a place.",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


def chat(messages: list[dict[str, Any]] | None = None, **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "claude", "messages": messages or [{"role": "user", "content": "Hi"}],
         **fields}
    )


def body(messages: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    return to_anthropic(chat(messages, **fields), DEPLOYMENT)


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# ---------------------------------------------------------------------------
# Request translation


def test_full_conversation() -> None:
    sent = body(
        [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use "},
                                              {"type": "text", "text": "metric units."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these, and the weather?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg",
                                                    "detail": "low"}},
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                call("call_1", "get_weather", '{"location": "Paris"}'),
                call("call:2", "get_time", ""),
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
            {"role": "tool", "tool_call_id": "call:2",
             "content": [{"type": "text", "text": "12:00"}]},
            {"role": "assistant", "content": None,
             "function_call": {"name": "get_weather", "arguments": '{"location": "Rome"}'}},
            {"role": "function", "name": "get_weather", "content": "25 C"},
            {"role": "user", "content": "Thanks."},
        ],
        tools=[WEATHER, TIME], user="user-7", stop=["END"], temperature=0.2, top_p=0.9,
        top_k=40, max_tokens=300,
    )
    assert sent == {
        "model": "claude-test-1",
        "max_tokens": 300,
        "system": "You are terse.\n\nUse metric units.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these, and the weather?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG}},
                {"type": "image", "source": {"type": "url",
                                             "url": "https://example.com/cat.jpg"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather",
                 "input": {"location": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18 C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "12:00"},
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_legacy_6", "name": "get_weather",
                 "input": {"location": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_legacy_6", "content": "25 C"},
                {"type": "text", "text": "Thanks."},
            ]},
        ],
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "tools": [
            {"name": "get_weather", "description": "The weather at a place.",
             "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}},
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "auto"},
        "metadata": {"user_id": "user-7"},
        "stream": True,
    }


def test_defaults_and_limits() -> None:
    sent = body()
    assert sent == {
        "model": "claude-test-1", "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "stream": True,
    }
    assert body(max_tokens=50, max_completion_tokens=70)["max_tokens"] == 70
    assert "top_k" not in body(top_k=0)  # llama.cpp's "off"
    assert body(stop="###")["stop_sequences"] == ["###"]


def test_same_role_turns_are_merged_and_results_come_first() -> None:
    sent = body([
        {"role": "user", "content": "One."},
        {"role": "user", "content": "Two."},
        {"role": "assistant", "content": "", "tool_calls": [call("c1", "get_weather", "{}")]},
        {"role": "user", "content": "Meanwhile..."},
        {"role": "tool", "tool_call_id": "c1", "content": ""},
    ], tools=[WEATHER])
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "One."}, {"type": "text", "text": "Two."}
    ]
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1"},
        {"type": "text", "text": "Meanwhile..."},
    ]


def test_conversation_opening_with_the_assistant_gets_a_user_turn() -> None:
    sent = body([
        {"role": "system", "content": "Greet first."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Weather?"},
    ])
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][0]["content"][0]["text"]


def test_final_assistant_message_is_trimmed() -> None:
    sent = body([{"role": "user", "content": "Say"}, {"role": "assistant", "content": "The "}])
    assert sent["messages"][-1] == {"role": "assistant",
                                    "content": [{"type": "text", "text": "The"}]}


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": "x"},
          {"role": "assistant", "tool_calls": [call("c1", "get_weather", "{not json")]},
          {"role": "tool", "tool_call_id": "c1", "content": "r"}], "messages[1].tool_calls"),
        ([{"role": "user", "content": "x"},
          {"role": "assistant", "tool_calls": [call("c1", "get_weather", "[1, 2]")]},
          {"role": "tool", "tool_call_id": "c1", "content": "r"}], "messages[1].tool_calls"),
        ([{"role": "user", "content": "x"},
          {"role": "assistant", "function_call": {"name": "get_weather", "arguments": "{"}},
          {"role": "function", "name": "get_weather", "content": "r"}],
         "messages[1].function_call"),
        ([{"role": "user", "content": "x"},
          {"role": "assistant", "tool_calls": [call("c1", "get_weather", "{}")]},
          {"role": "tool", "tool_call_id": "c9", "content": "r"}], "messages[2].tool_call_id"),
        ([{"role": "user", "content": "x"},
          {"role": "assistant", "tool_calls": [call("c1", "get_weather", "{}")]},
          {"role": "user", "content": "never mind"}], "messages[1].tool_calls"),
        ([{"role": "user", "content": "x"},
          {"role": "function", "name": "get_weather", "content": "r"}], "messages[1].name"),
        ([{"role": "system", "content": "only a system prompt"}], "messages"),
        ([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]}],
         "messages[0].content[0].image_url.url"),
        ([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}],
         "messages[0].content[0].image_url.url"),
    ],
)
def test_malformed_conversations_name_the_field(
    messages: list[dict[str, Any]], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        body(messages, tools=[WEATHER])
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("fields", "choice"),
    [
        ({"tool_choice": "none"}, {"type": "none"}),
        ({"tool_choice": "auto"}, {"type": "auto"}),
        ({"tool_choice": "required"}, {"type": "any"}),
        ({"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
         {"type": "tool", "name": "get_time"}),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        ({"tool_choice": "required", "parallel_tool_calls": False},
         {"type": "any", "disable_parallel_tool_use": True}),
        ({"tool_choice": "none", "parallel_tool_calls": False}, {"type": "none"}),
    ],
)
def test_tool_choice(fields: dict[str, Any], choice: dict[str, Any]) -> None:
    assert body(tools=[WEATHER, TIME], **fields)["tool_choice"] == choice


@pytest.mark.parametrize(
    ("function_call", "choice"),
    [
        (None, {"type": "auto", "disable_parallel_tool_use": True}),
        ("none", {"type": "none"}),
        ({"name": "get_time"}, {"type": "tool", "name": "get_time",
                                "disable_parallel_tool_use": True}),
    ],
)
def test_legacy_functions_become_tools(function_call: Any, choice: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"functions": [WEATHER["function"], TIME["function"]]}
    if function_call is not None:
        fields["function_call"] = function_call
    sent = body(**fields)
    assert [t["name"] for t in sent["tools"]] == ["get_weather", "get_time"]
    assert sent["tool_choice"] == choice


def test_tool_fields_are_checked() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        body(tool_choice={"type": "function", "function": {"name": "nope"}}, tools=[WEATHER])
    assert caught.value.param == "tool_choice"


@pytest.mark.parametrize(
    ("effort", "budget"),
    [("minimal", 1024), ("low", 1024), ("medium", 4096), ("high", 16384), ("xhigh", 32768)],
)
def test_reasoning_effort_turns_on_thinking(effort: str, budget: int) -> None:
    sent = body(reasoning_effort=effort, max_tokens=2000)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert sent["max_tokens"] == max(2000, budget + 1024)
    assert body(reasoning_effort=effort, max_tokens=60000)["max_tokens"] == 60000


def test_reasoning_effort_none_and_unset_do_not_think() -> None:
    assert "thinking" not in body(reasoning_effort="none")
    assert "thinking" not in body()


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 0.5}, "temperature"),
        ({"top_k": 5}, "top_k"),
        ({"top_p": 0.5}, "top_p"),
        ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice"),
        ({"functions": [TIME["function"]], "function_call": {"name": "get_time"}},
         "function_call"),
    ],
)
def test_thinking_limits(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        body(reasoning_effort="low", **fields)
    assert caught.value.param == param
    assert "thinking" not in json.dumps(body(**fields))  # fine without reasoning_effort


def test_thinking_allowed_with_temperature_one_and_high_top_p() -> None:
    sent = body(reasoning_effort="low", temperature=1, top_p=0.97)
    assert sent["thinking"]["budget_tokens"] == 1024


def test_thinking_is_left_off_when_continuing_a_tool_loop() -> None:
    loop: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "tool_calls": [call("c1", "get_weather", "{}")]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert "thinking" not in body(loop, tools=[WEATHER], reasoning_effort="high")
    with pytest.raises(InvalidRequestError):  # the limits hold all the same, every turn
        body(loop, tools=[WEATHER], reasoning_effort="high", temperature=0.3)
    after: list[dict[str, Any]] = [*loop, {"role": "assistant", "content": "Sunny."},
             {"role": "user", "content": "Tomorrow?"}]
    assert "thinking" in body(after, tools=[WEATHER], reasoning_effort="high")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -0.5}, "frequency_penalty"),
        ({"repetition_penalty": 1.1}, "repetition_penalty"),
        ({"min_p": 0.05}, "min_p"),
        ({"seed": 7}, "seed"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
         "response_format"),
        ({"temperature": 1.5}, "temperature"),
    ],
)
async def test_unsupported_parameters_are_refused_before_any_request(
    fields: dict[str, Any], param: str
) -> None:
    # No server listens at DEPLOYMENT's URL: the refusal must come first.
    async with HTTPPool() as pool, aiohttp.ClientSession() as session:
        backend = AnthropicBackend(DEPLOYMENT, session, pool)
        with pytest.raises(UnsupportedParameterError) as caught:
            await backend.open(chat(**fields))
    assert caught.value.param == param
    assert caught.value.status_code == 400
    assert "is not supported by the anthropic backend" in caught.value.message


def test_no_op_values_of_unsupported_parameters_are_accepted() -> None:
    sent = body(n=1, presence_penalty=0, frequency_penalty=0, repetition_penalty=1,
                min_p=0, logprobs=False, logit_bias={}, response_format={"type": "text"})
    assert set(sent) == {"model", "max_tokens", "messages", "stream"}


# ---------------------------------------------------------------------------
# Stream translation


def translate(recording: str) -> list[Delta]:
    translator = StreamTranslator()
    deltas = [d for event, data in load_recording(recording)
              for d in translator.feed(event, data)]
    return deltas + translator.finish()


def content(deltas: list[Delta]) -> str:
    return "".join(d.content or "" for d in deltas)


def test_translates_the_text_recording() -> None:
    deltas = translate("anthropic_text")
    assert content(deltas) == "Hello! How can I help you today?"
    assert len([d for d in deltas if d.content]) == 4
    assert all(d.index == 0 for d in deltas)
    assert deltas[-2:] == [
        Delta(finish_reason="stop"),
        Delta(usage=TokenUsage(prompt_tokens=25, completion_tokens=15, cached_tokens=12)),
    ]


def test_translates_the_tool_use_recording() -> None:
    deltas = translate("anthropic_tool_use")
    assert content(deltas) == "Okay, let's check the weather for San Francisco, CA:"
    pieces = [p for d in deltas for p in d.tool_calls]
    assert pieces[0] == ToolCallDelta(0, id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="get_weather")
    fragments = [p.arguments for p in pieces[1:]]
    assert len(fragments) > 3 and all(p.index == 0 and p.id is None for p in pieces[1:])
    assert json.loads("".join(fragments)) == {"location": "San Francisco, CA",
                                              "unit": "fahrenheit"}
    assert deltas[-2:] == [Delta(finish_reason="tool_calls"),
                           Delta(usage=TokenUsage(472, 89, 0))]


def test_thinking_is_reasoning_and_its_signature_a_delta_of_its_own() -> None:
    deltas = translate("anthropic_thinking")
    assert content(deltas) == "The greatest common divisor of 1071 and 462 is **21**."
    assert "".join(d.reasoning or "" for d in deltas) == (
        "I need to find the GCD of 1071 and 462 using the Euclidean algorithm.\n\n"
        "1071 = 2 × 462 + 147\n462 = 3 × 147 + 21\n147 = 7 × 21 + 0\n\n"
        "So GCD(1071, 462) = 21")
    signed = [d for d in deltas if d.signature]
    assert [d.signature for d in signed] == ["EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."]
    # The signature closes the reasoning: it comes after the last thinking, before the text.
    order = [("r" if d.reasoning else "s" if d.signature else "c") for d in deltas
             if d.reasoning or d.signature or d.content]
    assert "".join(order) == "rrsccc"
    assert not any(d.tool_calls for d in deltas)
    assert deltas[-2:] == [Delta(finish_reason="stop"), Delta(usage=TokenUsage(44, 142, 0))]


def events(*items: dict[str, Any]) -> list[Delta]:
    translator = StreamTranslator()
    return [d for item in items for d in translator.feed(item["type"], json.dumps(item))]


START = {"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 1}}}
STOP = {"type": "message_stop"}


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"),
     ("max_tokens", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter")],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    deltas = events(START, {"type": "message_delta", "delta": {"stop_reason": reason},
                            "usage": {"output_tokens": 9}}, STOP)
    assert deltas == [Delta(finish_reason=finish), Delta(usage=TokenUsage(3, 9, 0))]


def test_prompt_tokens_count_cache_reads_and_writes() -> None:
    usage = {"input_tokens": 10, "cache_read_input_tokens": 100,
             "cache_creation_input_tokens": 5, "output_tokens": 1}
    deltas = events({"type": "message_start", "message": {"usage": usage}},
                    {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                     "usage": {"output_tokens": 20}}, STOP)
    assert deltas[-1] == Delta(usage=TokenUsage(115, 20, 100))


def test_malformed_events_are_ignored_not_fatal() -> None:
    deltas = events(START, {"type": "content_block_start", "index": 0, "content_block": "?"},
                    {"type": "content_block_delta", "index": 7, "delta": None},
                    {"type": "message_delta", "delta": {"stop_reason": ["?"]}}, STOP)
    assert deltas[0] == Delta(finish_reason="stop")


def test_several_calls_and_a_call_without_input() -> None:
    def tool(index: int, call_id: str) -> dict[str, Any]:
        return {"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": call_id, "name": "f", "input": {}}}

    deltas = events(
        START, tool(0, "t0"),
        {"type": "content_block_stop", "index": 0},
        tool(1, "t1"),
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "ping"}, {"type": "some_future_event"}, STOP,
    )
    assert [p for d in deltas for p in d.tool_calls] == [
        ToolCallDelta(0, id="t0", name="f"), ToolCallDelta(0, arguments="{}"),
        ToolCallDelta(1, id="t1", name="f"), ToolCallDelta(1, arguments='{"a": 1}'),
    ]


def test_initial_text_of_a_block_is_content() -> None:
    deltas = events(START, {"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": "Hi"}}, STOP)
    assert content(deltas) == "Hi"


def test_error_event_raises() -> None:
    translator = StreamTranslator()
    translator.feed("message_start", json.dumps(START))
    with pytest.raises(UpstreamError) as caught:
        translator.feed("error", json.dumps({"type": "error", "error": {
            "type": "overloaded_error", "message": "Overloaded"}}))
    assert caught.value.status_code == 503 and not caught.value.retryable
    assert "Overloaded" in caught.value.message


def test_a_stream_without_message_stop_is_an_error() -> None:
    translator = StreamTranslator()
    translator.feed("message_start", json.dumps(START))
    with pytest.raises(UpstreamError) as caught:
        translator.finish()
    assert caught.value.status_code == 503 and not caught.value.retryable


# ---------------------------------------------------------------------------
# Against the fake Anthropic server


@pytest.fixture
async def pool() -> AsyncIterator[HTTPPool]:
    async with HTTPPool() as p:
        yield p


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@asynccontextmanager
async def upstream(
    pool: HTTPPool, script: Script | None = None, **deployment: Any
) -> AsyncIterator[tuple[AnthropicBackend, web.Application]]:
    app = make_app(api_key=KEY, script=script)
    async with serve(app) as base_url, aiohttp.ClientSession() as session:
        settings: dict[str, Any] = {"base_url": base_url, "api_key": KEY, **deployment}
        deployment_ = Deployment("anthropic", "claude-test-1", **settings)
        yield AnthropicBackend(deployment_, session, pool), app


async def collect(stream: DeltaStream) -> list[Delta]:
    async with stream:
        return [d async for d in stream]


async def test_text_reply(pool: HTTPPool) -> None:
    async with upstream(pool, headers={"anthropic-beta": "x"}) as (backend, app):
        deltas = await collect(await backend.open(chat(max_tokens=64)))
        sent, headers = app[STATE].requests[0], app[STATE].headers[0]
    assert content(deltas) == "Hello! How can I help you today?"
    assert deltas[-2:] == [Delta(finish_reason="stop"), Delta(usage=TokenUsage(25, 15, 12))]
    assert sent["stream"] is True and sent["model"] == "claude-test-1"
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "x"
    assert headers["Content-Type"] == "application/json"


async def test_tool_call(pool: HTTPPool) -> None:
    tools = [TIME, WEATHER]
    async with upstream(pool) as (backend, _):
        deltas = await collect(await backend.open(chat(tools=tools, tool_choice={
            "type": "function", "function": {"name": "get_time"}})))
    pieces = [p for d in deltas for p in d.tool_calls]
    assert pieces[0].name == "get_time" and pieces[0].id
    assert json.loads("".join(p.arguments for p in pieces))["unit"] == "fahrenheit"
    assert deltas[-2].finish_reason == "tool_calls"


async def test_reasoning_request_is_accepted_and_thinking_relayed(
    pool: HTTPPool,
) -> None:
    async with upstream(pool) as (backend, app):
        deltas = await collect(await backend.open(chat(reasoning_effort="medium")))
        assert app[STATE].requests[0]["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert content(deltas) == "The greatest common divisor of 1071 and 462 is **21**."
    assert "".join(d.reasoning or "" for d in deltas).startswith("I need to find the GCD")


async def test_full_conversation_passes_the_strict_fake(pool: HTTPPool) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": [
            {"type": "text", "text": "Look"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
        {"role": "assistant", "tool_calls": [call("call:1", "get_weather", '{"location": "X"}')]},
        {"role": "tool", "tool_call_id": "call:1", "content": "warm"},
        {"role": "assistant", "content": "And Rome:", "function_call": {
            "name": "get_weather", "arguments": '{"location": "Rome"}'}},
        {"role": "function", "name": "get_weather", "content": "hot"},
        {"role": "user", "content": "And now?"},
    ]
    async with upstream(pool) as (backend, app):
        deltas = await collect(await backend.open(chat(messages, tools=[WEATHER],
                                                       reasoning_effort="low")))
        assert "thinking" not in app[STATE].requests[0]  # a tool loop goes on
    assert deltas[-2].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("status", "retry_after", "client_status", "retryable", "expected_retry_after"),
    [
        (429, 7, 429, True, 7),
        (529, None, 503, True, 1),
        (500, None, 503, True, 1),
        (401, None, 503, False, 30),
        (404, None, 404, False, None),
    ],
)
async def test_upstream_error_statuses(
    pool: HTTPPool, status: int, retry_after: int | None, client_status: int,
    retryable: bool, expected_retry_after: int | None,
) -> None:
    script = Script(status=status, message="scripted", retry_after=retry_after)
    async with upstream(pool, script) as (backend, _):
        with pytest.raises(UpstreamError) as caught:
            await backend.open(chat())
    error = caught.value
    assert (error.status_code, error.retryable, error.upstream_status) == (
        client_status, retryable, status)
    assert error.retry_after == expected_retry_after


async def test_wrong_api_key_is_a_503_not_retryable(pool: HTTPPool) -> None:
    async with upstream(pool, api_key="sk-ant-wrong") as (backend, _):
        with pytest.raises(UpstreamError) as caught:
            await backend.open(chat())
    assert caught.value.status_code == 503 and not caught.value.retryable
    assert caught.value.upstream_status == 401


async def test_request_refused_by_the_upstream_is_a_400(pool: HTTPPool) -> None:
    bad_image = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,***"}}]}]
    async with upstream(pool) as (backend, app):
        with pytest.raises(UpstreamError) as caught:
            await backend.open(chat(bad_image))
        assert app[STATE].requests == []
    assert caught.value.status_code == 400 and not caught.value.retryable
    assert "invalid_request_error" in caught.value.message
    assert "base64" in caught.value.message


async def test_base_url_may_end_with_v1(
    pool: HTTPPool, session: aiohttp.ClientSession
) -> None:
    app = make_app(api_key=KEY)
    async with serve(app) as base_url:
        backend = AnthropicBackend(Deployment("anthropic", "c", f"{base_url}/v1/", KEY),
                                   session, pool)
        assert content(await collect(await backend.open(chat())))


async def test_unreachable_upstream_is_retryable(
    pool: HTTPPool, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        backend = AnthropicBackend(
            Deployment("anthropic", "c", f"http://127.0.0.1:{port}", KEY), session, pool
        )
        with pytest.raises(UpstreamError) as caught:
            await backend.open(chat())
    assert caught.value.status_code == 503 and caught.value.retryable
    assert caught.value.upstream_status is None


async def test_silent_upstream_times_out(pool: HTTPPool) -> None:
    async with upstream(pool, Script(delay=2), read_timeout=0.2) as (backend, _):
        with pytest.raises(UpstreamError) as caught:
            await backend.open(chat())
    assert caught.value.status_code == 503 and caught.value.retryable


async def test_death_mid_stream_raises_after_some_deltas(pool: HTTPPool) -> None:
    got: list[Delta] = []
    async with (upstream(pool, Script(die_after=6)) as (backend, _),
                await backend.open(chat()) as deltas):
        with pytest.raises(UpstreamError) as caught:
            async for delta in deltas:
                got.append(delta)
    assert content(got) == "Hello! How can I"
    assert caught.value.status_code == 503 and not caught.value.retryable


async def test_error_event_mid_stream(pool: HTTPPool) -> None:
    got: list[Delta] = []
    async with (upstream(pool, Script(error_after=5)) as (backend, _),
                await backend.open(chat()) as deltas):
        with pytest.raises(UpstreamError) as caught:
            async for delta in deltas:
                got.append(delta)
    assert content(got) == "Hello!"
    assert "overloaded_error" in caught.value.message and not caught.value.retryable


@pytest.mark.parametrize("read_first", [2, 0])
async def test_closing_the_deltas_closes_the_upstream_connection(
    pool: HTTPPool, read_first: int
) -> None:
    async with upstream(pool, Script(stall_after=5)) as (backend, app):
        deltas = await backend.open(chat())
        got = [await anext(deltas) for _ in range(read_first)]
        assert not app[STATE].disconnected.is_set()
        await deltas.aclose()
        await asyncio.wait_for(app[STATE].disconnected.wait(), timeout=5)
    assert content(got) == "Hello!"[: 6 if read_first else 0]


# ---------------------------------------------------------------------------
# The fake itself is strict: each of these is refused the way Anthropic refuses it

GOOD: dict[str, Any] = {
    "model": "claude-test-1", "max_tokens": 100, "stream": True,
    "messages": [{"role": "user", "content": "Hi"}],
}
TOOLS = [{"name": "f", "input_schema": {"type": "object"}}]


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


USE = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f",
                                         "input": {}}]}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"temperature": 1.5}, "temperature"),
        ({"model": None}, "model"),
        ({"max_tokens": None}, "max_tokens"),
        ({"messages": None}, "messages"),
        ({"frequency_penalty": 0.1}, "Extra inputs"),
        ({"messages": [{"role": "assistant", "content": "Hi"}]}, "first message"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
         "alternate"),
        ({"messages": [user({"type": "audio", "data": "x"})]}, "Input tag 'audio'"),
        ({"messages": [user({"type": "text", "text": ""})]}, "non-empty"),
        ({"messages": [{"role": "user", "content": "x"}, USE,
                       user({"type": "tool_result", "tool_use_id": "t2"})],
          "tools": TOOLS}, "unexpected `tool_use_id`"),
        ({"messages": [{"role": "user", "content": "x"}, USE, user({"type": "text",
                                                                   "text": "y"})],
          "tools": TOOLS}, "without `tool_result`"),
        ({"messages": [{"role": "user", "content": "x"}, USE,
                       user({"type": "text", "text": "y"},
                            {"type": "tool_result", "tool_use_id": "t1"})],
          "tools": TOOLS}, "must come first"),
        ({"tool_choice": {"type": "required"}, "tools": TOOLS}, "tool_choice"),
        ({"tool_choice": {"type": "tool", "name": "g"}, "tools": TOOLS}, "no tool named"),
        ({"tool_choice": {"type": "none", "disable_parallel_tool_use": True}, "tools": TOOLS},
         "Extra inputs"),
        ({"tool_choice": {"type": "any"}}, "while providing tools"),
        ({"tools": [{"name": "f", "input_schema": {"type": "array"}}]}, "input_schema.type"),
        ({"thinking": {"type": "enabled", "budget_tokens": 512}}, "1024"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "max_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048,
          "temperature": 0.5}, "temperature"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048,
          "tool_choice": {"type": "any"}, "tools": TOOLS}, "forces tool use"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048,
          "tools": TOOLS, "messages": [{"role": "user", "content": "x"}, USE,
                                       user({"type": "tool_result", "tool_use_id": "t1"})]},
         "must start with a thinking block"),
        ({"messages": [user({"type": "image", "source": {
            "type": "base64", "media_type": "image/bmp", "data": "Qk0="}})]}, "media_type"),
    ],
)
async def test_the_fake_refuses_malformed_requests(
    session: aiohttp.ClientSession, change: dict[str, Any], words: str
) -> None:
    sent = {**GOOD, **change}
    sent = {key: value for key, value in sent.items() if value is not None}
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    app = make_app(api_key=KEY)
    async with serve(app) as base_url:
        async with session.post(f"{base_url}/v1/messages", json=GOOD, headers=headers) as ok:
            assert ok.status == 200
            await ok.read()
        async with session.post(f"{base_url}/v1/messages", json=sent, headers=headers) as bad:
            answer = await bad.json()
    assert bad.status == 400
    assert answer["type"] == "error"
    assert answer["error"]["type"] == "invalid_request_error"
    assert words in answer["error"]["message"]


@pytest.mark.parametrize(
    ("headers", "status", "kind"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),
        ({"x-api-key": "wrong", "anthropic-version": "2023-06-01"}, 401,
         "authentication_error"),
        ({"x-api-key": KEY}, 400, "invalid_request_error"),
    ],
)
async def test_the_fake_checks_headers(
    session: aiohttp.ClientSession, headers: dict[str, str], status: int, kind: str
) -> None:
    async with serve(make_app(api_key=KEY)) as base_url:
        answer = await session.post(f"{base_url}/v1/messages", json=GOOD, headers=headers)
        async with answer:
            assert answer.status == status
            assert (await answer.json())["error"]["type"] == kind


async def test_the_fake_answers_without_streaming_too(session: aiohttp.ClientSession) -> None:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    sent = {**GOOD, "stream": False, "tools": TOOLS}
    async with serve(make_app(api_key=KEY)) as base_url:
        answer = await session.post(f"{base_url}/v1/messages", json=sent, headers=headers)
        async with answer:
            message = await answer.json()
    assert message["model"] == "claude-test-1" and message["stop_reason"] == "tool_use"
    assert message["content"][1] == {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                                     "name": "f", "input": {"location": "San Francisco, CA",
                                                            "unit": "fahrenheit"}}


async def test_a_redirect_is_a_clear_error_not_followed(
    pool: HTTPPool, session: aiohttp.ClientSession
) -> None:
    async def moved(request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect("https://api.example.com/v1/messages")

    app = web.Application()
    app.router.add_post("/v1/messages", moved)
    async with serve(app) as base_url:
        backend = AnthropicBackend(Deployment("anthropic", "c", base_url, KEY), session, pool)
        with pytest.raises(UpstreamError) as info:
            await backend.open(ChatCompletionRequest.model_validate(
                {"model": "c", "messages": [{"role": "user", "content": "hi"}]}))
    assert (info.value.status_code, info.value.code, info.value.retryable) == (
        503, "upstream_redirect", False)
    assert "redirect to https://api.example.com/v1/messages" in info.value.message
