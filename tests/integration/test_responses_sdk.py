"""OpenAI's Responses API (/v1/responses) through the official openai SDK, against the
real embedded model: create and stream (the typed events, in order, numbered),
retrieve and delete, a function-calling round trip, previous_response_id (across a
restart of the server), the same text as chat completions and Messages, refusals
of what Kathan cannot honour, and the ledger."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import LiveServer, start_server, stop_server

MODEL = "smollm2-135m-instruct"
WEATHER = {
    "type": "function", "name": "get_weather",
    "description": "Get the current weather in a location",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]},
}


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=live_server.v1, api_key=live_server.api_key, max_retries=0) as c:
        yield c


def _account_key(server: LiveServer, name: str, **limits: int) -> str:
    admin = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.base_url, headers=admin, timeout=60) as http:
        account = http.post("/admin/accounts", json={"name": name}).json()
        body: dict[str, Any] = {"account_id": account["id"], "name": name}
        if limits:
            body["limits"] = limits
        key: str = http.post("/admin/keys", json=body).json()["key"]
    return key


def test_a_response_and_its_stream_say_the_same(client: OpenAI) -> None:
    ask: dict[str, Any] = {"model": MODEL, "input": "Say hello.", "instructions": "Be brief.",
                           "max_output_tokens": 16, "temperature": 0, "store": False}
    response = client.responses.create(**ask)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete") and response.model == MODEL
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.output_text and response.output_text == message.content[0].text
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.usage.total_tokens == (response.usage.input_tokens
                                           + response.usage.output_tokens)
    assert response.instructions == "Be brief." and response.max_output_tokens == 16
    with client.responses.stream(**ask) as stream:
        pieces = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response() if response.status == "completed" else None
    assert len(pieces) > 1 and "".join(pieces) == response.output_text
    if final is not None:
        assert final.output_text == response.output_text
        assert final.usage is not None
        assert final.usage.output_tokens == response.usage.output_tokens


def test_the_stream_sends_the_typed_events_in_order(live_server: LiveServer) -> None:
    body = {"model": MODEL, "input": "Hi", "max_output_tokens": 8, "stream": True,
            "temperature": 0, "store": False}
    with httpx.stream("POST", f"{live_server.v1}/responses", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {live_server.api_key}"}) as r:
        assert r.status_code == 200
        names: list[str] = []
        events: list[dict[str, Any]] = []
        for line in r.iter_lines():
            if line.startswith("event: "):
                names.append(line.removeprefix("event: "))
            elif line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    assert [e["type"] for e in events] == names
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert names[:5] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added",
                         "response.output_text.delta"]
    # Eight tokens is the whole budget: the response ends incomplete, and says why.
    assert names[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.incomplete"]
    last = events[-1]["response"]
    assert last["status"] == "incomplete"
    assert last["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["output"][0]["status"] == "incomplete"
    assert last["usage"]["output_tokens"] == 8
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert events[-4]["text"] == text == last["output"][0]["content"][0]["text"]


def test_stored_responses_are_retrieved_deleted_and_private(
    client: OpenAI, live_server: LiveServer
) -> None:
    made = client.responses.create(model=MODEL, input="Name a colour.", temperature=0,
                                   max_output_tokens=8, metadata={"ticket": "42"})
    assert made.store is True  # OpenAI's default
    got = client.responses.retrieve(made.id)
    assert got.model_dump() == made.model_dump()
    assert got.metadata == {"ticket": "42"}
    other = _account_key(live_server, "responses-other")
    with OpenAI(base_url=live_server.v1, api_key=other, max_retries=0) as stranger:
        with pytest.raises(openai.NotFoundError):
            stranger.responses.retrieve(made.id)
        with pytest.raises(openai.NotFoundError):
            stranger.responses.delete(made.id)
        with pytest.raises(openai.NotFoundError) as continued:
            stranger.responses.create(model=MODEL, input="And another?",
                                      previous_response_id=made.id)
        assert "previous_response_id" in continued.value.message
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(made.id)
    unstored = client.responses.create(model=MODEL, input="Hi", max_output_tokens=4,
                                       store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_a_function_calling_round_trip(client: OpenAI) -> None:
    ask = "What's the weather in Tokyo?"
    called = client.responses.create(
        model=MODEL, input=ask, tools=[WEATHER], temperature=0, max_output_tokens=64,
        tool_choice={"type": "function", "name": "get_weather"})  # type: ignore[list-item]
    [call] = [item for item in called.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.status == "completed"
    assert "location" in json.loads(call.arguments)
    assert called.status == "completed"
    # The streamed call is the same call, argument deltas and all.
    with client.responses.stream(
            model=MODEL, input=ask, tools=[WEATHER], temperature=0,  # type: ignore[list-item]
            max_output_tokens=64, tool_choice={"type": "function", "name": "get_weather"},
            store=False) as stream:
        deltas = [e.delta for e in stream
                  if e.type == "response.function_call_arguments.delta"]
        streamed = stream.get_final_response()
    [again] = [item for item in streamed.output if item.type == "function_call"]
    assert (again.name, again.arguments) == (call.name, call.arguments)
    assert "".join(deltas) == call.arguments
    # The result goes back, continuing the stored response. (What this small model then
    # writes is little: it starts a <tool_response> of its own, which is its template's
    # markup and ends the reply; the prompt is what is compared below.)
    result = "Sunny, 21 degrees celsius."
    answer = client.responses.create(
        model=MODEL, previous_response_id=called.id, tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none", temperature=0, max_output_tokens=24,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": result}])
    assert answer.previous_response_id == called.id
    assert answer.status == "completed"
    assert not [item for item in answer.output if item.type == "function_call"]
    # The same conversation sent whole, as the SDK returned its items, says the same.
    whole = client.responses.create(
        model=MODEL, tools=[WEATHER], tool_choice="none",  # type: ignore[list-item]
        temperature=0, max_output_tokens=24, store=False,
        input=[{"role": "user", "content": ask}, *called.output,  # type: ignore[list-item]
               {"type": "function_call_output", "call_id": call.call_id, "output": result}])
    assert whole.output_text == answer.output_text
    assert whole.usage is not None and answer.usage is not None
    assert whole.usage.input_tokens == answer.usage.input_tokens


def test_responses_messages_and_chat_completions_give_the_same_text(
    client: OpenAI, live_server: LiveServer
) -> None:
    system, question = "You answer in one sentence.", "What is the capital of France?"
    response = client.responses.create(model=MODEL, instructions=system, input=question,
                                       temperature=0, max_output_tokens=24, store=False)
    chat = client.chat.completions.create(
        model=MODEL, max_tokens=24, temperature=0,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}])
    with anthropic.Anthropic(base_url=live_server.base_url, api_key=live_server.api_key,
                             max_retries=0) as claude:
        message = claude.messages.create(
            model=MODEL, max_tokens=24, system=system, extra_body={"temperature": 0},
            messages=[{"role": "user", "content": question}])
    assert response.output_text == chat.choices[0].message.content
    assert response.output_text == message.content[0].text  # type: ignore[union-attr]


def test_a_json_schema_format_gives_json(client: OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    response = client.responses.create(
        model=MODEL, input="Name the capital of France.", temperature=0, store=False,
        max_output_tokens=48,
        text={"format": {"type": "json_schema", "name": "city", "schema": schema,
                         "strict": True}})
    assert set(json.loads(response.output_text)) == {"city"}
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"


def test_what_cannot_be_honoured_is_a_400_that_names_it(client: OpenAI) -> None:
    hi: dict[str, Any] = {"model": MODEL, "input": "Hi", "max_output_tokens": 4}
    for extra, named in [
        ({"background": True}, "background"),
        ({"conversation": "conv_123"}, "conversation"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"truncation": "auto"}, "truncation"),
        ({"include": ["file_search_call.results"]}, "include[0]"),
        ({"reasoning": {"effort": "high"}}, "reasoning_effort"),
        ({"input": [{"role": "user", "content": [
            {"type": "input_file", "file_id": "file_1"}]}]}, "input[0].content[0]"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(**{**hi, **extra})
        assert named in refused.value.message, (extra, refused.value.message)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(**{**hi, "model": "no-such-model"})
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        client.responses.create(**{**hi, "temperature": 3})
    assert "temperature" in invalid.value.message


def test_logprobs_come_with_the_text_when_included(client: OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input="Say hi.", temperature=0, max_output_tokens=6, store=False,
        include=["message.output_text.logprobs"], top_logprobs=2)
    [part] = response.output[0].content  # type: ignore[union-attr]
    assert part.type == "output_text" and part.logprobs
    assert "".join(p.token for p in part.logprobs) == part.text
    assert all(len(p.top_logprobs) == 2 for p in part.logprobs)


def test_each_response_gets_a_ledger_row_under_its_endpoint_and_limits_apply(
    live_server: LiveServer,
) -> None:
    key = _account_key(live_server, "responses-ledger", rpm=2)
    with OpenAI(base_url=live_server.v1, api_key=key, max_retries=0) as c:
        c.responses.create(model=MODEL, input="Hi", max_output_tokens=2, temperature=0)
        with c.responses.stream(model=MODEL, input="Hi", max_output_tokens=2,
                                temperature=0) as stream:
            for _ in stream:
                pass
        with pytest.raises(openai.RateLimitError) as limited:
            c.responses.create(model=MODEL, input="Hi", max_output_tokens=2)
        assert limited.value.response.headers["retry-after"]
    time.sleep(0.5)  # the ledger writes within ledger_flush_seconds
    rows = httpx.get(f"{live_server.v1}/usage", headers={"Authorization": f"Bearer {key}"},
                     timeout=30).json()["data"]
    assert {r["endpoint"] for r in rows} == {"responses"}
    assert sum(r["requests"] for r in rows) == 3
    assert sum(r["succeeded"] for r in rows) == 2 and sum(r["rate_limited"] for r in rows) == 1
    assert sum(r["completion_tokens"] for r in rows) == 4
    only = httpx.get(f"{live_server.v1}/usage", params={"endpoint": "chat/completions"},
                     headers={"Authorization": f"Bearer {key}"}, timeout=30).json()["data"]
    assert only == []


def test_previous_response_id_survives_a_restart(tmp_path: Path) -> None:
    # Deterministic: the continued request runs cold (after the restart) and the whole
    # conversation warm (its prefix cached by the first); only then is the same prompt
    # sure to give the same greedy tokens (a near-tie flipped here on another CPU).
    config = "local:\n  n_ctx: 2048\n  deterministic: true\n"
    server = start_server(tmp_path, config)
    try:
        with OpenAI(base_url=server.v1, api_key=server.api_key, max_retries=0) as c:
            first = c.responses.create(model=MODEL, input="My name is Ada. Say hi.",
                                       temperature=0, max_output_tokens=12)
    finally:
        stop_server(server)
    server = start_server(tmp_path, config)  # the same data directory: the same store
    try:
        with OpenAI(base_url=server.v1, api_key=server.api_key, max_retries=0) as c:
            assert c.responses.retrieve(first.id).output_text == first.output_text
            second = c.responses.create(model=MODEL, previous_response_id=first.id,
                                        input="What is my name?", temperature=0,
                                        max_output_tokens=12)
            whole = c.responses.create(
                model=MODEL, temperature=0, max_output_tokens=12, store=False, input=[
                    {"role": "user", "content": "My name is Ada. Say hi."},
                    {"role": "assistant", "content": first.output_text},
                    {"role": "user", "content": "What is my name?"}])
    finally:
        stop_server(server)
    # The stored conversation is the model's prompt: the same as sending it whole.
    assert second.usage is not None and whole.usage is not None
    assert second.usage.input_tokens == whole.usage.input_tokens
    assert second.output_text == whole.output_text
