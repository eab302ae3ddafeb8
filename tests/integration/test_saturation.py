"""A gateway Kathan in front of slow, hanging and full fake upstreams (real processes, the
official SDK): busy is not dead, a silent upstream costs one timeout, and the
request's deadline bounds the wait before an answer begins. One test drives a model's
router in this process, with the real backend and upstream, to see its places."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from kathan.backends.http1 import HTTPPool
from kathan.errors import ServiceUnavailableError
from kathan.protocol.chat import ChatCompletionRequest
from kathan.routing.breaker import Circuit
from kathan.routing.build import build_registry
from kathan.settings import Settings
from tests.conftest import LiveServer, start_server, stop_server
from tests.upstreams.openai_fake import Script, serve

UPSTREAM_KEY = "sk-upstream"
ASK: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def config(deployments: list[tuple[str, str]], routing: str) -> str:
    """``deployments``: (base URL, extra YAML lines for the deployment)."""
    listed = "".join(
        f"      - backend: openai\n        base_url: {url}\n"
        f"        api_key_env: UPSTREAM_KEY\n        model: m\n{extra}"
        for url, extra in deployments)
    return ("local: null\n"
            f"routing:\n  retries: 2\n  backoff_seconds: 0.05\n  breaker_failures: 2\n{routing}"
            f"models:\n  - id: m\n    deployments:\n{listed}")


async def gateway(tmp_path: Path, text: str) -> LiveServer:
    return await asyncio.to_thread(start_server, tmp_path, text, {"UPSTREAM_KEY": UPSTREAM_KEY})


def client(server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.v1, api_key=server.api_key, max_retries=0, timeout=60)


async def test_requests_past_max_in_flight_wait_for_a_place_and_all_succeed(
        tmp_path: Path) -> None:
    slow = Script(delay=0.4)
    async with serve(slow) as url:
        server = await gateway(tmp_path, config(
            [(url, "        max_in_flight: 2\n")], "  queue_seconds: 20\n"))
        try:
            async with client(server) as c:
                answers = await asyncio.gather(
                    *(c.chat.completions.create(**ASK) for _ in range(8)))
                assert all(a.choices[0].message.content for a in answers)
                # The breaker saw no failure: the deployment still answers at once.
                again = await c.chat.completions.create(**ASK)
                assert again.choices[0].message.content
            assert len(slow.requests) == 9
        finally:
            await asyncio.to_thread(stop_server, server)


async def test_a_model_full_past_the_queue_time_is_busy_with_retry_after(
        tmp_path: Path) -> None:
    slow = Script(delay=2.0)
    async with serve(slow) as url:
        server = await gateway(tmp_path, config(
            [(url, "        max_in_flight: 1\n")], "  queue_seconds: 0.5\n"))
        try:
            async with client(server) as c:
                results = await asyncio.gather(
                    *(c.chat.completions.create(**ASK) for _ in range(3)),
                    return_exceptions=True)
                busy = [r for r in results if isinstance(r, openai.APIStatusError)]
                assert len(busy) == 2 and sum(not isinstance(r, Exception) for r in results) == 1
                for error in busy:
                    assert error.status_code == 503
                    assert error.body["code"] == "model_busy"  # type: ignore[index]
                    assert "busy" in error.message and "max_in_flight" in error.message
                    assert int(error.response.headers["retry-after"]) >= 1
                # Busy is not failing: no circuit opened, the next request is served.
                assert (await c.chat.completions.create(**ASK)).choices[0].message.content
        finally:
            await asyncio.to_thread(stop_server, server)


async def test_a_hanging_upstream_answers_within_the_deadline(tmp_path: Path) -> None:
    hanging = Script(delay=60)
    async with serve(hanging) as url:
        server = await gateway(tmp_path, config(
            [(url, "        read_timeout: 120\n")], "  deadline_seconds: 1\n"))
        try:
            async with client(server) as c:
                began = time.monotonic()
                with pytest.raises(openai.APIStatusError) as info:
                    await c.chat.completions.create(**ASK)
                waited = time.monotonic() - began
            assert info.value.status_code == 503
            assert info.value.body["code"] == "deadline_exceeded"  # type: ignore[index]
            assert "deadline of 1 s" in info.value.message
            assert int(info.value.response.headers["retry-after"]) >= 1
            assert waited < 10  # the deployment's own read_timeout is 120 s
            assert len(hanging.requests) == 1
        finally:
            await asyncio.to_thread(stop_server, server)


async def test_a_lone_deployment_that_timed_out_is_not_asked_again(tmp_path: Path) -> None:
    silent = Script(delay=30)
    async with serve(silent) as url:
        server = await gateway(tmp_path, config(
            [(url, "        read_timeout: 0.5\n")], ""))
        try:
            async with client(server) as c:
                with pytest.raises(openai.APIStatusError) as info:
                    await c.chat.completions.create(**ASK)
            assert info.value.status_code == 503
            assert "did not answer within" in info.value.message
            assert len(silent.requests) == 1  # retries: 2, yet one timeout, not three
        finally:
            await asyncio.to_thread(stop_server, server)


async def test_after_a_timeout_the_retry_goes_to_the_other_deployment(tmp_path: Path) -> None:
    silent, quick = Script(delay=30), Script(reply="from the quick one")
    async with serve(silent) as slow_url, serve(quick) as quick_url:
        server = await gateway(tmp_path, config(
            [(slow_url, "        read_timeout: 0.5\n"), (quick_url, "")],
            "  breaker_cooldown: 60\n"))
        try:
            async with client(server) as c:
                for _ in range(4):
                    answer = await c.chat.completions.create(**ASK)
                    assert answer.choices[0].message.content == "from the quick one"
            assert len(quick.requests) == 4
            # Each request asked the silent one at most once; two timeouts opened its circuit.
            assert len(silent.requests) <= 2
        finally:
            await asyncio.to_thread(stop_server, server)


async def test_every_place_comes_back_however_a_request_ended(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", UPSTREAM_KEY)
    request = ChatCompletionRequest.model_validate({**ASK, "stream": True})
    slow = Script(delay=0.2)
    async with serve(slow) as url, HTTPPool() as pool, aiohttp.ClientSession() as session:
        settings = Settings(local=None, routing={"queue_seconds": 0.3}, models=[{
            "id": "m", "deployments": [{"backend": "openai", "base_url": url, "model": "m",
                                        "api_key_env": "UPSTREAM_KEY", "max_in_flight": 2}]}])
        _, (router,) = build_registry(settings, session=session, pool=pool)
        route = router.routes[0]

        async def whole() -> str:
            async with await router.open(request) as stream:
                return "".join([d.content async for d in stream if d.content])

        held = [await router.open(request) for _ in range(2)]  # full
        leaving = asyncio.create_task(router.open(request))  # its client will leave
        await asyncio.sleep(0.05)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        with pytest.raises(ServiceUnavailableError) as info:  # nothing given back in time
            await router.open(request)
        assert info.value.code == "model_busy" and route.in_flight == 2
        for stream in held:
            await stream.aclose()
        assert route.in_flight == 0 and route.breaker.state(router.clock()) is Circuit.CLOSED

        router.queue_seconds = 30  # time enough for three rounds of two
        answers = await asyncio.gather(*(whole() for _ in range(6)))
        assert answers == [slow.reply] * 6 and len(slow.requests) == 8
        assert route.in_flight == 0 and not router._waiting and router._handed == 0
        assert route.breaker.state(router.clock()) is Circuit.CLOSED
