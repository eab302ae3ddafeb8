"""Anthropic and Gemini deployments behind a gateway Kathan, through the official SDK.

The upstreams are strict local fakes that follow each provider's wire format,
reject malformed requests, and replay recorded event sequences.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import LiveServer, start_server, stop_server
from tests.upstreams import anthropic_fake

PROVIDER_KEY = "sk-provider"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a location",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}


def config(backend: str, url: str, model: str) -> str:
    return (
        "local: null\nmodels:\n"
        f"  - id: {model}\n    capabilities: [tools, vision, reasoning]\n    deployments:\n"
        f"      - backend: {backend}\n        base_url: {url}\n"
        "        api_key_env: PROVIDER_KEY\n"
        f"        model: {model}-upstream\n"
    )


async def gateway(tmp: Path, text: str) -> LiveServer:
    return await asyncio.to_thread(start_server, tmp, text, {"PROVIDER_KEY": PROVIDER_KEY})


async def both(c: AsyncOpenAI, **kw: Any) -> tuple[Any, str, list[Any], str | None]:
    r = await c.chat.completions.create(**kw)
    stream = await c.chat.completions.create(stream=True, **kw)
    text, calls, finish = "", [], None
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            calls += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    return r, text, calls, finish


async def test_anthropic_text_tools_and_errors(tmp_path: Path) -> None:
    app = anthropic_fake.make_app(api_key=PROVIDER_KEY)
    async with anthropic_fake.serve(app) as url:
        server = await gateway(tmp_path, config("anthropic", url, "claude"))
        try:
            async with AsyncOpenAI(base_url=server.v1, api_key=server.api_key,
                                   max_retries=0) as c:
                r, text, _, finish = await both(
                    c, model="claude", max_tokens=200,
                    messages=[{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Hello!"}])
                assert r.choices[0].message.content and text == r.choices[0].message.content
                assert finish == r.choices[0].finish_reason == "stop"
                assert r.usage is not None and r.usage.prompt_tokens > 0
                r, _, pieces, finish = await both(
                    c, model="claude", max_tokens=200, tools=[WEATHER], tool_choice="required",
                    messages=[{"role": "user", "content": "Weather in Paris?"}])
                call = (r.choices[0].message.tool_calls or [])[0]
                assert r.choices[0].finish_reason == finish == "tool_calls"
                assert call.function.name == "get_weather"
                assert isinstance(json.loads(call.function.arguments), dict)
                assert pieces[0].id and pieces[0].function.name == "get_weather"
                # The tool result goes back as a tool_result block; the fake checks the id.
                follow = await c.chat.completions.create(
                    model="claude", max_tokens=200, tools=[WEATHER],
                    messages=[{"role": "user", "content": "Weather in Paris?"},
                              r.choices[0].message.model_dump(exclude_none=True),
                              {"role": "tool", "tool_call_id": call.id, "content": "18C"}])
                assert follow.choices[0].message is not None
                with pytest.raises(openai.BadRequestError) as info:
                    await c.chat.completions.create(
                        model="claude", messages=[{"role": "user", "content": "hi"}], seed=3)
                assert info.value.response.json()["error"]["param"] == "seed"
        finally:
            await asyncio.to_thread(stop_server, server)


async def test_anthropic_refused_key_and_overload(tmp_path: Path) -> None:
    wrong = anthropic_fake.make_app(api_key="sk-other")
    overloaded = anthropic_fake.make_app(
        api_key=PROVIDER_KEY, script=anthropic_fake.Script(status=529, message="Overloaded"))
    async with anthropic_fake.serve(wrong) as url1, anthropic_fake.serve(overloaded) as url2:
        text = config("anthropic", url1, "claude") + config(
            "anthropic", url2, "busy").split("models:\n", 1)[1]
        server = await gateway(tmp_path, text)
        try:
            async with AsyncOpenAI(base_url=server.v1, api_key=server.api_key,
                                   max_retries=0) as c:
                for model, words in (("claude", "credentials"), ("busy", "could answer")):
                    with pytest.raises(openai.APIStatusError) as info:
                        await c.chat.completions.create(
                            model=model, messages=[{"role": "user", "content": "hi"}])
                    assert info.value.status_code == 503 and words in info.value.message
                    assert info.value.response.headers.get("retry-after")
        finally:
            await asyncio.to_thread(stop_server, server)


async def test_gemini_text_json_tools_and_errors(tmp_path: Path) -> None:
    from tests.upstreams import gemini_fake

    script = gemini_fake.Script(api_key=PROVIDER_KEY)
    model = min(gemini_fake.MODELS)
    async with gemini_fake.serve(script) as url:
        text = ("local: null\nmodels:\n  - id: gemini\n    deployments:\n"
                f"      - backend: gemini\n        base_url: {url}\n"
                f"        api_key_env: PROVIDER_KEY\n        model: {model}\n")
        server = await gateway(tmp_path, text)
        try:
            async with AsyncOpenAI(base_url=server.v1, api_key=server.api_key,
                                   max_retries=0) as c:
                r, streamed, _, finish = await both(
                    c, model="gemini", messages=[{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Hello!"}])
                assert r.choices[0].message.content and streamed == r.choices[0].message.content
                assert finish == "stop" and r.usage is not None and r.usage.prompt_tokens > 0
                r, _, _, _ = await both(
                    c, model="gemini", response_format={"type": "json_object"},
                    messages=[{"role": "user", "content": "A recipe as JSON."}])
                json.loads(r.choices[0].message.content or "")
                r, _, pieces, finish = await both(
                    c, model="gemini", tools=[WEATHER], tool_choice="required",
                    messages=[{"role": "user", "content": "Weather in Paris?"}])
                call = (r.choices[0].message.tool_calls or [])[0]
                assert finish == "tool_calls" and call.function.name
                assert pieces[0].id and pieces[0].function.name == call.function.name
                assert isinstance(json.loads(call.function.arguments), dict)
                with pytest.raises(openai.BadRequestError) as info:
                    await c.chat.completions.create(
                        model="gemini", messages=[{"role": "user", "content": "hi"}],
                        logit_bias={"1": 1})
                assert info.value.response.json()["error"]["param"] == "logit_bias"
                script.status, script.retry_after = 429, 4
                with pytest.raises(openai.RateLimitError) as limited:
                    await c.chat.completions.create(
                        model="gemini", messages=[{"role": "user", "content": "hi"}])
                assert limited.value.response.headers["retry-after"]
        finally:
            await asyncio.to_thread(stop_server, server)
