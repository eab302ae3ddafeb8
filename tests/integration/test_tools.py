"""Tool calling with the real model through the official SDK.

Every case runs twice, non-streamed and streamed, at temperature 0; the
streamed tool-call deltas accumulated must equal the non-streamed message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import LiveServer, start_server, stop_server

MODEL = "smollm2-135m-instruct"

# The seeds' example tool.
WEATHER_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "The city name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location"],
}
GET_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a location",
    "parameters": WEATHER_PARAMS}}
GET_TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
ASK = [{"role": "user", "content": "What's the weather in Tokyo?"}]


def call(i: int, city: str) -> dict[str, Any]:
    return {"id": f"call_{i}", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"location": city})}}


# A conversation in which the assistant already used the tool: the model
# follows the pattern and opens a call of its own under tool_choice "auto".
HISTORY = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [call(1, "Paris")]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18}'},
    {"role": "assistant", "content": "It is 18 degrees celsius in Paris."},
    {"role": "user", "content": "What's the weather in Tokyo?"},
]


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=live_server.v1, api_key=live_server.api_key,
                           max_retries=0) as c:
        yield c


@dataclass
class Reply:
    content: str | None
    calls: list[tuple[str, str, str]]  # (id, name, arguments)
    finish: str | None
    raw_deltas: list[dict[str, Any]] = field(default_factory=list)

    def without_ids(self) -> tuple[str | None, list[tuple[str, str]], str | None]:
        return self.content, [(name, args) for _, name, args in self.calls], self.finish


async def both(client: AsyncOpenAI, **kw: Any) -> tuple[Reply, Reply]:
    """The same request non-streamed and streamed; the stream accumulated by hand.

    A first, discarded request puts the prompt in the prefix cache, so that the
    two compared requests run on the same cached state: a prompt computed in
    one batch and a cached one differ in the last bits of their logits, which
    can flip a near-tie even at temperature 0.
    """
    args: dict[str, Any] = {"model": MODEL, "max_tokens": 120, "temperature": 0,
                            "messages": ASK, "tools": [GET_WEATHER]}
    args.update(kw)
    await client.chat.completions.create(**{**args, "max_tokens": 1})
    r = await client.chat.completions.create(**args)
    message = r.choices[0].message
    plain = Reply(message.content,
                  [(c.id, c.function.name, c.function.arguments)
                   for c in message.tool_calls or []],
                  r.choices[0].finish_reason)
    stream = await client.chat.completions.create(stream=True, **args)
    content: list[str] = []
    calls: dict[int, list[str]] = {}
    deltas: list[dict[str, Any]] = []
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta
            content.append(delta.content or "")
            for piece in delta.tool_calls or []:
                deltas.append(piece.model_dump(exclude_none=True))
                entry = calls.setdefault(piece.index, ["", "", ""])
                if piece.id:
                    entry[0] = piece.id
                if piece.function and piece.function.name:
                    entry[1] = piece.function.name
                if piece.function and piece.function.arguments:
                    entry[2] += piece.function.arguments
            finish = choice.finish_reason or finish
    text = "".join(content)
    streamed = Reply(text if text or not calls else None,
                     [(c[0], c[1], c[2]) for _, c in sorted(calls.items())], finish, deltas)
    assert streamed.without_ids() == plain.without_ids()
    return plain, streamed


def assert_calls_valid(reply: Reply, schema: dict[str, Any] = WEATHER_PARAMS) -> None:
    assert reply.calls, reply
    assert reply.content is None
    assert reply.finish == "tool_calls"
    for call_id, _name, arguments in reply.calls:
        assert call_id.startswith("call_")
        jsonschema.validate(json.loads(arguments), schema)
    assert len({c[0] for c in reply.calls}) == len(reply.calls)


def assert_stream_shape(reply: Reply) -> None:
    """id, type and name come first for each call, then only argument fragments."""
    seen: set[int] = set()
    for piece in reply.raw_deltas:
        if piece["index"] not in seen:
            seen.add(piece["index"])
            assert piece["id"].startswith("call_") and piece["type"] == "function"
            assert piece["function"]["name"] and piece["function"]["arguments"] == ""
        else:
            assert set(piece) == {"index", "function"} and set(piece["function"]) == {"arguments"}


@pytest.mark.parametrize("parallel", [None, False])
async def test_required_forces_a_valid_call(client: AsyncOpenAI, parallel: bool | None) -> None:
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    plain, streamed = await both(client, tool_choice="required", **extra)
    for reply in (plain, streamed):
        assert_calls_valid(reply)
        assert {name for _, name, _ in reply.calls} == {"get_weather"}
    assert_stream_shape(streamed)
    if parallel is False:
        assert len(plain.calls) == 1


async def test_named_function_is_the_one_called(client: AsyncOpenAI) -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    plain, streamed = await both(client, tools=[GET_WEATHER, GET_TIME], tool_choice=choice)
    for reply in (plain, streamed):
        assert_calls_valid(reply, GET_TIME["function"]["parameters"])  # type: ignore[index]
        assert [name for _, name, _ in reply.calls] == ["get_time"]
    assert_stream_shape(streamed)


async def test_auto_answers_in_text_when_the_model_does_not_call(tmp_path: Path) -> None:
    # A deterministic server of its own: whether the 135M model's greedy answer ends
    # within 120 tokens or falls into a loop ("The city is also famous for its anime and
    # manga, ..." until the limit) depended on the last bits of its logits, which in the
    # default mode depend on how its prompt's KV was computed (whole, or partly from an
    # earlier test's cache): both were seen on the shared server.
    server = start_server(tmp_path, "local:\n  n_ctx: 2048\n  deterministic: true\n")
    try:
        async with AsyncOpenAI(base_url=server.v1, api_key=server.api_key,
                               max_retries=0) as client:
            plain, _ = await both(client, tool_choice="auto")
    finally:
        stop_server(server)
    assert plain.calls == [] and plain.finish == "stop"
    assert plain.content and "<tool" not in plain.content


async def test_auto_calls_when_the_model_opens_a_call(client: AsyncOpenAI) -> None:
    plain, streamed = await both(client, messages=HISTORY, parallel_tool_calls=False)
    assert_calls_valid(plain)
    assert len(plain.calls) == 1
    assert_stream_shape(streamed)


async def test_tool_choice_none_never_calls(client: AsyncOpenAI) -> None:
    plain, _ = await both(client, messages=HISTORY, tool_choice="none")
    assert plain.calls == [] and plain.finish in ("stop", "length")
    assert plain.content is not None


async def test_round_trip_call_result_answer(client: AsyncOpenAI) -> None:
    first, _ = await both(client, tool_choice="required", parallel_tool_calls=False)
    call_id, name, arguments = first.calls[0]
    messages = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id,
         "content": '{"temperature": 22, "unit": "celsius", "sky": "clear"}'},
    ]
    # The client asks for the answer now; the tools stay declared, the history
    # holds the call and its result. (Under "auto" this small model sometimes
    # calls again instead, which is allowed there.)
    final, _ = await both(client, messages=messages, tool_choice="none")
    assert final.calls == [] and final.finish == "stop"
    assert final.content is not None and "22" in final.content


async def test_legacy_functions_answer_with_function_call(client: AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model=MODEL, max_tokens=120, temperature=0, messages=ASK,
        functions=[GET_WEATHER["function"]],  # type: ignore[list-item]
        function_call={"name": "get_weather"})
    choice = r.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.tool_calls is None and choice.message.function_call is not None
    assert choice.message.function_call.name == "get_weather"
    jsonschema.validate(json.loads(choice.message.function_call.arguments), WEATHER_PARAMS)
    # The legacy result message continues the conversation.
    follow = await client.chat.completions.create(
        model=MODEL, max_tokens=60, temperature=0, functions=[GET_WEATHER["function"]],  # type: ignore[list-item]
        function_call="none",
        messages=[*ASK, choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
                  {"role": "function", "name": "get_weather", "content": "22 degrees"}])
    # At temperature 0 this small model answers the result with a result of its own
    # ("<tool_response>..."), which ends its reply at the tag: the legacy result
    # message is taken, and no markup comes back.
    answer = follow.choices[0]
    assert answer.finish_reason in ("stop", "length") and answer.message.function_call is None
    assert "<tool" not in (answer.message.content or "")


async def test_tools_with_a_response_format_give_calls_or_valid_json(client: AsyncOpenAI) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}},
              "required": ["answer"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    for messages in (ASK, HISTORY):
        plain, _ = await both(client, messages=messages, response_format=fmt, max_tokens=80)
        if plain.calls:
            assert_calls_valid(plain)
        else:
            jsonschema.validate(json.loads(plain.content or ""), schema)


async def test_each_choice_parses_its_own_calls(client: AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model=MODEL, max_tokens=120, temperature=0.7, seed=3, n=3, messages=ASK,
        tools=[GET_WEATHER], tool_choice="required", parallel_tool_calls=False)
    assert len(r.choices) == 3
    for choice in r.choices:
        assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls or []) == 1
        jsonschema.validate(json.loads(choice.message.tool_calls[0].function.arguments),  # type: ignore[index]
                            WEATHER_PARAMS)


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {
                "x": {"type": "number", "minimum": 0}}}}}]},
         "tools[0].function.parameters"),
        ({"tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "array"}}}]}, "tools[0].function.parameters"),
        ({"tools": [GET_WEATHER, GET_WEATHER]}, "tools[1].function.name"),
        ({"tools": [GET_WEATHER], "tool_choice": {"type": "function",
                                                  "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"messages": [{"role": "tool", "tool_call_id": "x", "content": "r"}]},
         "messages[0].tool_call_id"),
    ],
)
async def test_bad_tool_definitions_get_400_naming_the_field(
    client: AsyncOpenAI, kw: dict[str, Any], param: str
) -> None:
    args: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": ASK, **kw}
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(**args)
    assert info.value.response.json()["error"]["param"] == param


async def test_malformed_tool_names_get_422(client: AsyncOpenAI) -> None:
    bad = {"type": "function", "function": {"name": "get weather!", "parameters": {}}}
    with pytest.raises(openai.UnprocessableEntityError) as info:
        await client.chat.completions.create(model=MODEL, messages=ASK, tools=[bad])  # type: ignore[list-item]
    detail = info.value.response.json()["detail"]
    assert any(d["loc"][-2:] == ["function", "name"] for d in detail)
