"""``client.embeddings.create`` (the official openai SDK) against a live Kathan whose
models are upstream deployments: strict local fakes of OpenAI's ``/v1/embeddings`` and
Gemini's ``batchEmbedContents`` (``tests/upstreams``). What the upstream received, the
vectors and usage that came back, the ledger row, and each upstream failure as the
client sees it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import LiveServer, start_server, stop_server
from tests.upstreams import gemini_fake, openai_fake

OPENAI_KEY = "sk-upstream"
GEMINI_KEY = "gemini-key"


def config(openai_url: str, gemini_url: str) -> str:
    return f"""\
local: null
routing: {{backoff_seconds: 0}}
models:
  - id: emb-openai
    deployments:
      - {{backend: openai, base_url: "{openai_url}", api_key_env: OPENAI_KEY,
          model: text-embedding-3-small}}
  - id: emb-gemini
    deployments:
      - {{backend: gemini, base_url: "{gemini_url}", api_key_env: GEMINI_KEY,
          model: gemini-embedding-001}}
  - id: claude
    deployments:
      - {{backend: anthropic, base_url: "http://127.0.0.1:9", api_key_env: OPENAI_KEY}}
  - id: chat-only
    capabilities: [tools]
    deployments:
      - {{backend: openai, base_url: "{openai_url}", api_key_env: OPENAI_KEY}}
"""


class World:
    def __init__(self, server: LiveServer, openai_script: openai_fake.Script,
                 gemini_script: gemini_fake.Script, client: AsyncOpenAI) -> None:
        self.server = server
        self.openai = openai_script
        self.gemini = gemini_script
        self.client = client

    async def key(self, name: str) -> str:
        """A stored key of a new account (its requests get ledger rows of their own)."""
        admin = {"Authorization": f"Bearer {self.server.api_key}"}
        async with httpx.AsyncClient(base_url=self.server.base_url, headers=admin) as http:
            account = (await http.post("/admin/accounts", json={"name": name})).json()
            made = await http.post("/admin/keys", json={"account_id": account["id"],
                                                        "name": name})
            key: str = made.json()["key"]
            return key

    async def usage(self, key: str, model: str) -> dict[str, int]:
        """The key's ledger, summed for ``model``."""
        await asyncio.sleep(0.5)  # the ledger writes within ledger_flush_seconds
        async with httpx.AsyncClient() as http:
            rows = (await http.get(f"{self.server.v1}/usage",
                                   headers={"Authorization": f"Bearer {key}"})).json()["data"]
        fields = ("requests", "succeeded", "failed", "rate_limited", "prompt_tokens")
        return {f: sum(r[f] for r in rows if r["model"] == model) for f in fields}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    openai_script = openai_fake.Script(api_key=OPENAI_KEY)
    gemini_script = gemini_fake.Script(api_key=GEMINI_KEY)
    async with openai_fake.serve(openai_script) as openai_url, \
            gemini_fake.serve(gemini_script) as gemini_url:
        server = await asyncio.to_thread(
            start_server, tmp_path, config(openai_url, gemini_url),
            {"OPENAI_KEY": OPENAI_KEY, "GEMINI_KEY": GEMINI_KEY})
        try:
            async with AsyncOpenAI(base_url=server.v1, api_key=server.api_key,
                                   max_retries=0) as client:
                yield World(server, openai_script, gemini_script, client)
        finally:
            await asyncio.to_thread(stop_server, server)


def rows(response: Any) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float64)


async def test_openai_gets_the_request_as_sent_and_its_answer_comes_back(world: World) -> None:
    c = world.client
    texts = ["hello world", "kathan"]
    # The SDK asks for base64 (and decodes it) unless told otherwise.
    r = await c.embeddings.create(model="emb-openai", input=texts, dimensions=4, user="u1")
    assert world.openai.requests[-1] == {
        "model": "text-embedding-3-small", "input": texts, "dimensions": 4, "user": "u1",
        "encoding_format": "base64"}
    expected = np.array([openai_fake.fake_vector(t, 4) for t in texts])
    assert np.allclose(rows(r), expected, atol=1e-6)
    assert r.model == "emb-openai" and r.usage.prompt_tokens == r.usage.total_tokens == 3
    ids = [[1, 2, 3], [4]]
    r = await c.embeddings.create(model="emb-openai", input=ids, encoding_format="float")
    assert world.openai.requests[-1] == {"model": "text-embedding-3-small", "input": ids,
                                         "encoding_format": "float"}
    assert rows(r).tolist() == [openai_fake.fake_vector(i, 8) for i in ids]
    assert r.usage.prompt_tokens == 4


async def test_openai_failures_as_the_client_sees_them(world: World) -> None:
    c, script = world.client, world.openai
    script.fail_next, script.fail_status = 1, 400
    with pytest.raises(openai.BadRequestError) as refused:
        await c.embeddings.create(model="emb-openai", input="x")
    assert "upstream trouble" in refused.value.message
    assert refused.value.code == "upstream_rejected"
    seen = len(script.requests)
    script.fail_next, script.fail_status = 1, 500  # retried: the second attempt answers
    r = await c.embeddings.create(model="emb-openai", input="x", encoding_format="float")
    assert len(script.requests) == seen + 2 and len(r.data) == 1
    script.fail_next, script.fail_status, script.retry_after = 3, 429, 2
    with pytest.raises(openai.RateLimitError) as limited:
        await c.embeddings.create(model="emb-openai", input="x")
    assert limited.value.response.headers["retry-after"]
    script.fail_next, script.fail_status = 3, 500
    with pytest.raises(openai.InternalServerError) as failed:
        await c.embeddings.create(model="emb-openai", input="x")
    assert failed.value.status_code == 503 and failed.value.code == "no_healthy_deployment"


async def test_models_without_embeddings_are_a_400(world: World) -> None:
    for model in ("claude", "chat-only"):
        with pytest.raises(openai.BadRequestError) as refused:
            await world.client.embeddings.create(model=model, input="x")
        assert refused.value.code == "unsupported_endpoint" and refused.value.param == "model"
    assert world.openai.requests == []


async def test_each_request_gets_one_ledger_row_with_the_upstreams_tokens(
    world: World,
) -> None:
    key = await world.key("embedder")
    async with AsyncOpenAI(base_url=world.server.v1, api_key=key, max_retries=0) as c:
        await c.embeddings.create(model="emb-openai", input=["one two three", "four"])
        await c.embeddings.create(model="emb-gemini", input=["a b c d e"])
        world.openai.fail_next, world.openai.fail_status = 1, 400
        with pytest.raises(openai.BadRequestError):
            await c.embeddings.create(model="emb-openai", input="x")
    assert await world.usage(key, "emb-openai") == {
        "requests": 2, "succeeded": 1, "failed": 1, "rate_limited": 0, "prompt_tokens": 4}
    assert await world.usage(key, "emb-gemini") == {
        "requests": 1, "succeeded": 1, "failed": 0, "rate_limited": 0, "prompt_tokens": 5}


async def test_gemini_gets_batch_embed_requests_and_kathan_encodes(world: World) -> None:
    c, script = world.client, world.gemini
    texts = ["a b c", "d"]
    r = await c.embeddings.create(model="emb-gemini", input=texts, dimensions=16,
                                  encoding_format="float", user="ignored")
    assert script.requests[-1] == {"requests": [
        {"model": "models/gemini-embedding-001", "outputDimensionality": 16,
         "content": {"parts": [{"text": t}]}} for t in texts]}
    assert script.urls[-1] == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert rows(r).tolist() == [gemini_fake.embedding_of(t, 16) for t in texts]
    assert r.usage.prompt_tokens == 4
    encoded = await c.embeddings.create(model="emb-gemini", input=texts, dimensions=16)
    assert np.allclose(rows(encoded), rows(r), atol=1e-6)  # base64 of the same floats
    many = [f"text {i}" for i in range(150)]
    r = await c.embeddings.create(model="emb-gemini", input=many, encoding_format="float")
    assert [len(b["requests"]) for b in script.requests[-2:]] == [100, 50]
    assert rows(r).tolist() == [gemini_fake.embedding_of(t, gemini_fake.EMBEDDING_DIMENSIONS)
                                for t in many]
    assert r.usage.prompt_tokens == 300


async def test_gemini_refusals_and_failures(world: World) -> None:
    c, script = world.client, world.gemini
    with pytest.raises(openai.BadRequestError) as ids:
        await c.embeddings.create(model="emb-gemini", input=[[1, 2, 3]])
    assert ids.value.param == "input" and ids.value.code == "unsupported_input"
    assert script.urls == []  # refused before anything was sent
    script.status, script.fail_next, script.message = 400, 1, "Bad things in the request."
    with pytest.raises(openai.BadRequestError) as refused:
        await c.embeddings.create(model="emb-gemini", input="x")
    assert "Bad things" in refused.value.message
    script.status, script.retry_delay = 429, "3s"
    with pytest.raises(openai.RateLimitError) as limited:
        await c.embeddings.create(model="emb-gemini", input="x")
    assert limited.value.response.headers["retry-after"]
    script.status = None
    script.usage_metadata = False  # an older API version: no token counts
    r = await c.embeddings.create(model="emb-gemini", input="x y")
    assert r.usage.prompt_tokens == 0
    assert "no usageMetadata.promptTokenCount" in world.server.log.read_text()
