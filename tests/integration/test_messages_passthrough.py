"""/v1/messages against an ``anthropic`` deployment, through the official anthropic SDK:
the request reaches Anthropic as the client sent it (cache_control, thinking with its
budget and an earlier turn's signed thinking blocks, top_k, metadata), only its model
changed, and count_tokens is Anthropic's own count. The upstream is the strict fake
of Anthropic's API (tests/upstreams/anthropic_fake.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anthropic
import pytest
import pytest_asyncio
from aiohttp import web

from tests.conftest import LiveServer, start_server, stop_server
from tests.upstreams import anthropic_fake

PROVIDER_KEY = "sk-provider"
WEATHER = {
    "name": "get_weather", "description": "Get the current weather in a location",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                     "required": ["location"]},
    "cache_control": {"type": "ephemeral"},
}


@dataclass
class Gateway:
    server: LiveServer
    fake: web.Application

    @property
    def seen(self) -> list[dict[str, Any]]:
        return self.fake[anthropic_fake.STATE].requests


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    fake = anthropic_fake.make_app(api_key=PROVIDER_KEY)
    async with anthropic_fake.serve(fake) as url:
        config = ("local: null\nmodels:\n  - id: claude\n"
                  "    capabilities: [tools, vision, reasoning]\n    deployments:\n"
                  f"      - backend: anthropic\n        base_url: {url}\n"
                  "        api_key_env: PROVIDER_KEY\n        model: claude-upstream\n")
        server = await asyncio.to_thread(start_server, tmp_path_factory.mktemp("passthrough"),
                                         config, {"PROVIDER_KEY": PROVIDER_KEY})
        try:
            yield Gateway(server, fake)
        finally:
            await asyncio.to_thread(stop_server, server)


def client(gateway: Gateway) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gateway.server.base_url,
                                    api_key=gateway.server.api_key, max_retries=0)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_request_reaches_anthropic_as_it_was_sent(gateway: Gateway) -> None:
    # This SDK version takes no sampling arguments: they go as extras, as JSON fields.
    sampling = {"top_k": 40, "temperature": 0.5}
    ask: dict[str, Any] = {
        "max_tokens": 300,
        "system": [{"type": "text", "text": "You are terse.",
                    "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Weather in Paris?",
             "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
        "tools": [WEATHER], "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "user-7"}, "stop_sequences": ["\n\nHuman:"],
    }
    async with client(gateway) as c:
        message = await c.messages.create(model="claude", **ask, extra_body=sampling)
        async with c.messages.stream(model="claude", **ask, extra_body=sampling) as stream:
            final = await stream.get_final_message()
    assert message.stop_reason == final.stop_reason == "tool_use"
    [use] = [b for b in message.content if b.type == "tool_use"]
    assert use.name == "get_weather"
    for sent in gateway.seen[-2:]:
        assert sent == {**ask, **sampling, "model": "claude-upstream", "stream": True}


@pytest.mark.asyncio(loop_scope="module")
async def test_thinking_keeps_its_budget_and_the_earlier_turns_signed_thinking(
    gateway: Gateway,
) -> None:
    async with client(gateway) as c:
        thought = await c.messages.create(
            model="claude", max_tokens=3000, thinking={"type": "enabled", "budget_tokens": 2000},
            messages=[{"role": "user", "content": "What is 27 * 453?"}])
        assert thought.content[-1].type == "text"
        assert gateway.seen[-1]["thinking"] == {"type": "enabled", "budget_tokens": 2000}
        # A tool-use loop with thinking: Anthropic wants the last assistant turn's thinking
        # block, signed, before its tool_use; the client sends it back and it arrives.
        earlier = [
            {"type": "thinking", "thinking": "I should look up the weather.",
             "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather",
             "input": {"location": "Paris"}},
        ]
        answer = await c.messages.create(
            model="claude", max_tokens=3000, thinking={"type": "enabled", "budget_tokens": 2000},
            tools=[WEATHER], messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": earlier},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A",
                                              "content": "18C and sunny"}]}])
    assert answer.stop_reason in ("end_turn", "tool_use")
    assert gateway.seen[-1]["messages"][1]["content"] == earlier


@pytest.mark.asyncio(loop_scope="module")
async def test_count_tokens_is_anthropics_count(gateway: Gateway) -> None:
    ask: dict[str, Any] = {"system": "Be brief.", "tools": [WEATHER],
                           "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    async with client(gateway) as c:
        counted = await c.messages.count_tokens(model="claude", **ask)
    body, count = gateway.fake[anthropic_fake.STATE].counted[-1]
    assert counted.input_tokens == count > 0
    assert body == {**ask, "model": "claude-upstream"}


@pytest.mark.asyncio(loop_scope="module")
async def test_an_upstream_refusal_reaches_the_sdk_as_its_type(gateway: Gateway) -> None:
    state = gateway.fake[anthropic_fake.STATE]
    state.script = anthropic_fake.Script(status=400, message="messages: something is off")
    try:
        async with client(gateway) as c:
            with pytest.raises(anthropic.BadRequestError) as refused:
                await c.messages.create(model="claude", max_tokens=10,
                                        messages=[{"role": "user", "content": "Hi"}])
            with pytest.raises(anthropic.BadRequestError):
                await c.messages.count_tokens(model="claude",
                                              messages=[{"role": "user", "content": "Hi"}])
    finally:
        state.script = anthropic_fake.Script()
    assert "something is off" in refused.value.message
