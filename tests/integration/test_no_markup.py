"""No internal markup in replies, with the real model through the official SDK: a tool
call cut by max_tokens comes back in ``tool_calls`` with ``finish_reason`` ``length``
(streamed and not), a fake tool result the model starts writing ends its reply, and a
reply cut inside a character drops the character.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from tests.conftest import LiveServer
from tests.integration.test_tools import ASK, GET_WEATHER, MODEL, both

MARKUP = ("<tool", "</tool", "<|im_", "tool_call>", "tool_response>", "\ufffd")


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=live_server.v1, api_key=live_server.api_key,
                           max_retries=0) as c:
        yield c


def clean(text: str | None) -> bool:
    return not any(m in (text or "") for m in MARKUP)


# With max_tokens 15 the reply ends just after the name; with 20, inside the arguments.
@pytest.mark.parametrize("max_tokens", [15, 20])
async def test_a_call_cut_after_its_name_is_a_partial_call_with_length(
    client: AsyncOpenAI, max_tokens: int
) -> None:
    plain, streamed = await both(client, tool_choice="required", max_tokens=max_tokens)
    for reply in (plain, streamed):
        assert reply.finish == "length"
        assert reply.content is None
        [(call_id, name, arguments)] = reply.calls
        assert call_id.startswith("call_") and name == "get_weather"
        assert clean(arguments)
        if max_tokens == 15:
            assert arguments == ""
            continue
        # The arguments as far as they were written: the start of the JSON object.
        assert arguments.startswith("{")
        try:
            json.loads(arguments)
        except json.JSONDecodeError:
            pass
        else:
            raise AssertionError(f"the arguments were not cut: {arguments}")
    assert streamed.raw_deltas[0]["function"] == {"name": "get_weather", "arguments": ""}


async def test_a_call_cut_before_its_name_is_complete_is_dropped(client: AsyncOpenAI) -> None:
    # max_tokens 1 ends inside "<tool_call>", 8 inside the head, 12 inside the name.
    for max_tokens in (1, 8, 12):
        plain, streamed = await both(client, tool_choice="required", max_tokens=max_tokens)
        for reply in (plain, streamed):
            assert (reply.content, reply.calls, reply.finish) == ("", [], "length"), max_tokens


async def test_a_tool_result_is_never_echoed_as_markup(client: AsyncOpenAI) -> None:
    messages: list[dict[str, Any]] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location": "Tokyo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1",
         "content": '{"temperature": 22, "unit": "celsius", "sky": "clear"}'},
    ]
    # At this seed one of the six choices starts a <tool_response> of its own.
    args: dict[str, Any] = {"model": MODEL, "messages": messages, "tools": [GET_WEATHER],
                            "tool_choice": "none", "max_tokens": 40, "temperature": 0.7,
                            "seed": 0, "n": 6}
    r = await client.chat.completions.create(**args)
    for choice in r.choices:
        assert clean(choice.message.content), choice.message.content
        assert not choice.message.tool_calls
    assert "" in {c.message.content for c in r.choices}  # that choice ended at the tag
    stream = await client.chat.completions.create(stream=True, **args)
    texts: dict[int, str] = {}
    async for chunk in stream:
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            assert not c.delta.tool_calls
    assert len(texts) == 6 and all(clean(t) for t in texts.values()), texts


async def test_a_reply_cut_inside_a_character_drops_it(client: AsyncOpenAI) -> None:
    # Token 25699 of SmolLM2 is b"\xe2\x82", the first two bytes of "€".
    args: dict[str, Any] = {"model": MODEL, "messages": ASK, "max_tokens": 1,
                            "logit_bias": {"25699": 100}}
    r = await client.chat.completions.create(**args)
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("", "length")
    assert r.usage is not None and r.usage.completion_tokens == 1
    stream = await client.chat.completions.create(stream=True, **args)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == ""
