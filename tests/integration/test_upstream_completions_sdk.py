"""``client.completions.create`` (the official openai SDK) against a live Kathan whose
model is an ``openai`` deployment (a strict local fake of OpenAI's ``/v1/completions``,
``tests/upstreams/openai_fake.py``): the request goes upstream as sent, streamed and
not, the ``text_completion``s come back (echo, n, several prompts, legacy logprobs,
usage), with one ledger row each, and upstream failures are mapped."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import LiveServer, start_server, stop_server
from tests.upstreams import openai_fake

KEY = "sk-upstream"
REPLY = "one two three four five"


def config(url: str) -> str:
    return f"""\
local: null
routing: {{backoff_seconds: 0}}
models:
  - id: instruct
    deployments:
      - {{backend: openai, base_url: "{url}", api_key_env: UPSTREAM_KEY,
          model: gpt-3.5-turbo-instruct}}
  - id: claude
    deployments:
      - {{backend: anthropic, base_url: "http://127.0.0.1:9", api_key_env: UPSTREAM_KEY}}
  - id: gemini
    deployments:
      - {{backend: gemini, base_url: "http://127.0.0.1:9", api_key_env: UPSTREAM_KEY}}
"""


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, openai_fake.Script]]:
    script = openai_fake.Script(api_key=KEY, reply=REPLY)
    async with openai_fake.serve(script) as url:
        server = await asyncio.to_thread(start_server, tmp_path, config(url),
                                         {"UPSTREAM_KEY": KEY})
        try:
            yield server, script
        finally:
            await asyncio.to_thread(stop_server, server)


def client(server: LiveServer, key: str | None = None) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.v1, api_key=key or server.api_key, max_retries=0)


SENT: dict[str, Any] = {
    "prompt": ["Say it", "Tell it"], "n": 2, "max_tokens": 3, "echo": True, "logprobs": 2,
    "suffix": "!", "best_of": 2, "seed": 7, "stop": ["\n"], "user": "u", "temperature": 0.5,
}


async def test_a_completion_goes_as_sent_and_comes_back_whole(
    upstream: tuple[LiveServer, openai_fake.Script],
) -> None:
    server, script = upstream
    async with client(server) as c:
        r = await c.completions.create(model="instruct", **SENT)
    assert script.requests[-1] == {**SENT, "model": "gpt-3.5-turbo-instruct", "stream": False}
    assert r.object == "text_completion" and r.model == "instruct" and r.id.startswith("cmpl-")
    assert [ch.index for ch in r.choices] == [0, 1, 2, 3]  # n choices per prompt
    for choice, prompt in zip(r.choices, ["Say it", "Say it", "Tell it", "Tell it"],
                              strict=True):
        assert choice.text == f"{prompt} one two three" and choice.finish_reason == "length"
        lp = choice.logprobs
        assert lp is not None and lp.tokens == [" one", " two", " three"]
        assert lp.token_logprobs == [-0.25, -0.5, -0.75]
        assert lp.top_logprobs == [{" one": -0.25, "zz": -1.25}, {" two": -0.5, "zz": -1.5},
                                   {" three": -0.75, "zz": -1.75}]
        offset = len(prompt)  # after the echoed prompt, as the upstream counted
        assert lp.text_offset == [offset, offset + 4, offset + 8]
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (6, 12)


async def test_a_stream_relays_the_upstreams_chunks(
    upstream: tuple[LiveServer, openai_fake.Script],
) -> None:
    server, script = upstream
    async with client(server) as c:
        whole = await c.completions.create(model="instruct", prompt="Go", max_tokens=4)
        stream = await c.completions.create(model="instruct", prompt="Go", max_tokens=4,
                                            stream=True, stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
        assert script.requests[-1] == {
            "model": "gpt-3.5-turbo-instruct", "prompt": "Go", "max_tokens": 4,
            "stream": True, "stream_options": {"include_usage": True}}
        assert all(ch.object == "text_completion" for ch in chunks)
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices) \
            == whole.choices[0].text == "one two three four"
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 4
        # Without include_usage, Kathan still asks for it (the ledger needs it), and the
        # client gets no usage chunk.
        plain = await c.completions.create(model="instruct", prompt=["A", "B"], stream=True,
                                           echo=True, max_tokens=2)
        texts: defaultdict[int, str] = defaultdict(str)
        async for chunk in plain:
            assert chunk.usage is None
            for choice in chunk.choices:
                texts[choice.index] += choice.text
        assert dict(texts) == {0: "A one two", 1: "B one two"}
        assert script.requests[-1]["stream_options"] == {"include_usage": True}


async def test_ledger_rows_and_failures(upstream: tuple[LiveServer, openai_fake.Script]) -> None:
    server, script = upstream
    admin = {"Authorization": f"Bearer {server.api_key}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=admin) as http:
        account = (await http.post("/admin/accounts", json={"name": "legacy"})).json()
        key = (await http.post("/admin/keys", json={"account_id": account["id"],
                                                    "name": "legacy"})).json()["key"]
    async with client(server, key) as c:
        await c.completions.create(model="instruct", prompt="Hi", max_tokens=2)
        stream = await c.completions.create(model="instruct", prompt="Hi", max_tokens=3,
                                            stream=True)
        async for _ in stream:
            pass
        script.fail_next, script.fail_status = 1, 400
        with pytest.raises(openai.BadRequestError) as refused:
            await c.completions.create(model="instruct", prompt="Hi")
        assert "upstream trouble" in refused.value.message
        script.fail_next, script.fail_status = 1, 502  # retried: the second attempt answers
        retried = await c.completions.create(model="instruct", prompt="Hi", max_tokens=1)
        assert retried.choices[0].text == "one"
        script.fail_next, script.fail_status, script.retry_after = 3, 429, 5
        with pytest.raises(openai.RateLimitError) as limited:
            await c.completions.create(model="instruct", prompt="Hi")
        assert limited.value.response.headers["retry-after"]
        seen = len(script.requests)
        for model in ("claude", "gemini"):
            with pytest.raises(openai.BadRequestError) as unsupported:
                await c.completions.create(model=model, prompt="Hi")
            assert unsupported.value.code == "unsupported_endpoint"
        assert len(script.requests) == seen
    await asyncio.sleep(0.5)  # the ledger writes within ledger_flush_seconds
    async with httpx.AsyncClient() as http:
        rows = (await http.get(f"{server.v1}/usage",
                               headers={"Authorization": f"Bearer {key}"})).json()["data"]
    mine = [r for r in rows if r["model"] == "instruct"]
    total = {f: sum(r[f] for r in mine) for f in
             ("requests", "succeeded", "failed", "rate_limited", "prompt_tokens",
              "completion_tokens")}
    # Each succeeded request: 3 prompt tokens, one completion token per word. The
    # upstream's 429 is a failure (rate_limited counts the key's own limits).
    assert total == {"requests": 5, "succeeded": 3, "failed": 2, "rate_limited": 0,
                     "prompt_tokens": 9, "completion_tokens": 6}
