"""``deterministic: true``: one temperature-0 request's tokens, and their log
probabilities, compared bit for bit: alone and cold, again with its prefix cached, and
among fifteen other requests at once (engine/llama.py says which llama.cpp kernels
would otherwise differ with the batch)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from tests.conftest import LiveServer, start_server, stop_server

MODEL = "smollm2-135m-instruct"
# Past 512 cells, where a lone token's attention would be split among the threads.
SYSTEM = " ".join(f"Rule {i}: answer kindly and precisely about topic number {i}."
                  for i in range(45))
TOPICS = ["cats", "dogs", "rain", "music", "chess", "bread", "trains", "stars", "rivers",
          "glass", "maps", "bees", "snow", "clocks", "paper"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("deterministic"),
                          "local:\n  n_ctx: 4096\n  deterministic: true\n")
    yield server
    stop_server(server)


async def greedy(client: AsyncOpenAI, messages: list[dict[str, Any]],
                 n: int = 48) -> tuple[list[tuple[str, float]], int]:
    reply = await client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=n, logprobs=True)  # type: ignore[arg-type]
    assert reply.choices[0].logprobs is not None and reply.usage is not None
    details = reply.usage.prompt_tokens_details
    return ([(t.token, t.logprob) for t in reply.choices[0].logprobs.content or []],
            details.cached_tokens or 0 if details else 0)


async def test_the_same_tokens_alone_cold_warm_and_among_fifteen_others(
    server: LiveServer,
) -> None:
    ask = [{"role": "system", "content": SYSTEM},
           {"role": "user", "content": "Tell me about the sea in three sentences."}]
    async with AsyncOpenAI(base_url=server.v1, api_key=server.api_key, max_retries=0) as c:
        cold, cached = await greedy(c, ask)
        assert cached == 0 and len(cold) > 10
        warm, cached = await greedy(c, ask)
        assert cached > 512  # its prefix came from the cache
        assert warm == cold
        results = await asyncio.gather(greedy(c, ask), *(
            greedy(c, [{"role": "user", "content": f"Write about {topic}."}], 24)
            for topic in TOPICS))
        assert results[0][0] == cold
