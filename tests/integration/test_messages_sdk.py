"""Anthropic's Messages API (/v1/messages) through the official anthropic SDK, against
the real embedded model: text, streaming, a tool-use round trip, count_tokens, errors
as the SDK's exception types, the same text as chat completions, and the ledger."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from openai import OpenAI

from tests.conftest import LiveServer

MODEL = "smollm2-135m-instruct"
GREEDY = {"temperature": 0}  # this SDK version sends sampling parameters as extras
WEATHER = {
    "name": "get_weather", "description": "Get the current weather in a location",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                     "required": ["location"]},
}


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=live_server.base_url, api_key=live_server.api_key,
                             max_retries=0) as c:
        yield c


def test_a_message_and_its_stream_say_the_same(client: anthropic.Anthropic) -> None:
    ask: dict[str, Any] = {"model": MODEL, "max_tokens": 16, "system": "Be brief.",
                           "messages": [{"role": "user", "content": "Say hello."}],
                           "extra_body": GREEDY}
    message = client.messages.create(**ask)
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.model == MODEL
    [block] = message.content
    assert block.type == "text" and block.text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0
    with client.messages.stream(**ask) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1  # streamed in pieces
    assert "".join(pieces) == block.text
    assert final.stop_reason == message.stop_reason
    assert final.usage.output_tokens == message.usage.output_tokens


def test_the_stream_sends_anthropics_events_in_order(live_server: LiveServer) -> None:
    body = {"model": MODEL, "max_tokens": 8, "stream": True, "temperature": 0,
            "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.stream("POST", f"{live_server.base_url}/v1/messages", json=body, timeout=60,
                      headers={"x-api-key": live_server.api_key,
                               "anthropic-version": "2023-06-01"}) as r:
        assert r.status_code == 200
        events = [line.removeprefix("event: ") for line in r.iter_lines()
                  if line.startswith("event: ")]
    assert events[:4] == ["message_start", "ping", "content_block_start",
                          "content_block_delta"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_a_tool_use_round_trip(client: anthropic.Anthropic, live_server: LiveServer) -> None:
    ask = [{"role": "user", "content": "What's the weather in Tokyo?"}]
    message = client.messages.create(
        model=MODEL, max_tokens=64, tools=[WEATHER], messages=ask,
        tool_choice={"type": "tool", "name": "get_weather"}, extra_body=GREEDY)
    assert message.stop_reason == "tool_use"
    [use] = [b for b in message.content if b.type == "tool_use"]
    assert use.name == "get_weather" and isinstance(use.input, dict)
    assert "location" in use.input
    # The streamed call is the same call.
    with client.messages.stream(
            model=MODEL, max_tokens=64, tools=[WEATHER], messages=ask,
            tool_choice={"type": "tool", "name": "get_weather"}, extra_body=GREEDY) as s:
        streamed = s.get_final_message()
    [again] = [b for b in streamed.content if b.type == "tool_use"]
    assert (again.name, again.input) == (use.name, use.input)
    # The result goes back. The model is given exactly what chat completions gives it
    # for the same conversation (an assistant turn with its call, then the tool's
    # message): the same prompt, the same answer.
    result = "Sunny, 21 degrees celsius."
    answer = client.messages.create(
        model=MODEL, max_tokens=24, tools=[WEATHER], extra_body=GREEDY,
        tool_choice={"type": "none"}, messages=[
            *ask,
            {"role": "assistant", "content": message.content},  # as the SDK returned it
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": result}]},
        ])
    assert answer.stop_reason in ("end_turn", "max_tokens")
    with OpenAI(base_url=live_server.v1, api_key=live_server.api_key, max_retries=0) as oa:
        chat = oa.chat.completions.create(
            model=MODEL, max_tokens=24, temperature=0, tool_choice="none",
            tools=[{"type": "function", "function": {
                "name": WEATHER["name"], "description": WEATHER["description"],
                "parameters": WEATHER["input_schema"]}}],
            messages=[*ask,  # type: ignore[list-item]
                      {"role": "assistant", "content": None, "tool_calls": [{
                          "id": use.id, "type": "function", "function": {
                              "name": use.name, "arguments": json.dumps(use.input)}}]},
                      {"role": "tool", "tool_call_id": use.id, "content": result}])
    assert chat.usage is not None
    assert answer.usage.input_tokens + (answer.usage.cache_read_input_tokens or 0) \
        == chat.usage.prompt_tokens
    text = "".join(b.text for b in answer.content if b.type == "text")
    assert text == (chat.choices[0].message.content or "")


def test_count_tokens_counts_what_the_model_is_given(
    client: anthropic.Anthropic, live_server: LiveServer
) -> None:
    ask = {"system": "Be brief.", "messages": [{"role": "user", "content": "Say hello."}]}
    counted = client.messages.count_tokens(model=MODEL, **ask)  # type: ignore[arg-type]
    message = client.messages.create(model=MODEL, max_tokens=4, extra_body=GREEDY,
                                     **ask)  # type: ignore[arg-type]
    usage = message.usage
    assert counted.input_tokens == usage.input_tokens + (usage.cache_read_input_tokens or 0)
    longer = client.messages.count_tokens(
        model=MODEL, system="Be brief.",
        messages=[{"role": "user", "content": "Say hello to everyone in the room, please."}])
    assert longer.input_tokens > counted.input_tokens


def test_errors_are_the_sdks_exception_types(
    client: anthropic.Anthropic, live_server: LiveServer
) -> None:
    hi = [{"role": "user", "content": "Hi"}]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=4, messages=hi)
    assert missing.value.body["type"] == "error"  # type: ignore[index]
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=MODEL, max_tokens=4, messages=hi,
                               extra_body={"temperature": 1.5})
    assert "temperature" in bad.value.message
    with pytest.raises(anthropic.BadRequestError) as server_tool:
        client.messages.create(model=MODEL, max_tokens=4, messages=hi, tools=[
            {"type": "web_search_20250305", "name": "web_search"}])  # type: ignore[list-item]
    assert "tools" in server_tool.value.message
    with pytest.raises(anthropic.BadRequestError) as reasoning:
        client.messages.create(model=MODEL, max_tokens=4, messages=hi,
                               thinking={"type": "enabled", "budget_tokens": 2048})
    assert "reasoning" in reasoning.value.message
    with anthropic.Anthropic(base_url=live_server.base_url, api_key="sk-wrong",
                             max_retries=0) as wrong, \
            pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model=MODEL, max_tokens=4, messages=hi)


def test_messages_and_chat_completions_give_the_same_text(
    client: anthropic.Anthropic, live_server: LiveServer
) -> None:
    system, question = "You answer in one sentence.", "What is the capital of France?"
    message = client.messages.create(
        model=MODEL, max_tokens=24, system=system, extra_body=GREEDY,
        messages=[{"role": "user", "content": question}])
    with OpenAI(base_url=live_server.v1, api_key=live_server.api_key, max_retries=0) as oa:
        chat = oa.chat.completions.create(
            model=MODEL, max_tokens=24, temperature=0,
            messages=[{"role": "system", "content": system},
                      {"role": "user", "content": question}])
    assert message.content[0].text == chat.choices[0].message.content  # type: ignore[union-attr]


def test_each_message_gets_a_ledger_row_and_limits_apply(live_server: LiveServer) -> None:
    admin = {"Authorization": f"Bearer {live_server.api_key}"}
    with httpx.Client(base_url=live_server.base_url, headers=admin, timeout=60) as http:
        account = http.post("/admin/accounts", json={"name": "messages"}).json()
        key = http.post("/admin/keys", json={"account_id": account["id"], "name": "m",
                                             "limits": {"rpm": 2}}).json()["key"]
    with anthropic.Anthropic(base_url=live_server.base_url, api_key=key, max_retries=0) as c:
        for _ in range(2):
            c.messages.create(model=MODEL, max_tokens=2, extra_body=GREEDY,
                              messages=[{"role": "user", "content": "Hi"}])
        with pytest.raises(anthropic.RateLimitError) as limited:
            c.messages.create(model=MODEL, max_tokens=2,
                              messages=[{"role": "user", "content": "Hi"}])
        assert limited.value.response.headers["retry-after"]
    time.sleep(0.5)  # the ledger writes within ledger_flush_seconds
    rows = httpx.get(f"{live_server.v1}/usage", headers={"Authorization": f"Bearer {key}"},
                     timeout=30).json()["data"]
    assert sum(r["requests"] for r in rows) == 3
    assert sum(r["rate_limited"] for r in rows) == 1
    assert json.dumps(rows)  # plain JSON


def test_a_stop_sequence_is_named_as_the_reason(client: anthropic.Anthropic) -> None:
    ask: dict[str, Any] = {"model": MODEL, "max_tokens": 24, "extra_body": GREEDY,
                           "messages": [{"role": "user", "content": "Tell me about cats."}]}
    free = client.messages.create(**ask).content[0].text  # type: ignore[union-attr]
    word = free.split()[3]  # a word the model will write again (greedy)
    stopped = client.messages.create(**ask, stop_sequences=[word, "zzzz"])
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", word)
    assert stopped.content[0].text == free[:free.index(word)]  # type: ignore[union-attr]
    with client.messages.stream(**ask, stop_sequences=[word, "zzzz"]) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", word)
    # Without one of its own, a reply that ends is an end_turn, not a stop_sequence.
    assert client.messages.create(**ask).stop_sequence is None
