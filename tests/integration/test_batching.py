"""Continuous batching with the real model: concurrency, cancellation, overload, prefix reuse."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import LiveServer, start_server, stop_server

MODEL = "smollm2-135m-instruct"
TOPICS = ["the sea", "mountains", "a cat", "bread", "winter", "trains", "the moon", "music",
          "gardens", "rain", "chess", "coffee", "rivers", "birds", "snow", "books"]


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own: these tests leave its KV cache full of other requests."""
    server = start_server(tmp_path_factory.mktemp("batch"), "local:\n  n_ctx: 2048\n")
    yield server
    stop_server(server)


@pytest.fixture
async def client(batch_server: LiveServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=batch_server.v1, api_key=batch_server.api_key,
                           max_retries=0) as c:
        yield c


def metric(server: LiveServer, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics").text
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    assert found, f"{name} missing from /metrics"
    return float(found.group(1))


async def stream_text(client: AsyncOpenAI, prompt: str, **kw: object) -> tuple[str, str | None]:
    args: dict[str, object] = {"model": MODEL, "max_tokens": 40, "temperature": 0,
                               "messages": [{"role": "user", "content": prompt}], "stream": True}
    args.update(kw)
    stream = await client.chat.completions.create(**args)  # type: ignore[call-overload]
    parts, finish = [], None
    async for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return "".join(parts), finish


async def test_sixteen_concurrent_streams_all_complete(client: AsyncOpenAI) -> None:
    prompts = [f"Write one sentence about {t}." for t in TOPICS]
    together = await asyncio.gather(*(stream_text(client, p) for p in prompts))
    assert len(together) == 16
    for text, finish in together:
        assert text.strip()
        assert finish in ("stop", "length")
    # Each stream answered its own prompt: the topic's key word shows up in most.
    on_topic = sum(t.split()[-1] in text.lower() for t, (text, _) in zip(TOPICS, together,
                                                                          strict=True))
    assert on_topic >= 10


Token = tuple[str, float, dict[str, float]]


async def greedy_tokens(client: AsyncOpenAI, prompt: str, max_tokens: int) -> list[Token]:
    """Greedy tokens with their log probabilities and the top 5 alternatives."""
    stream = await client.chat.completions.create(
        model=MODEL, max_tokens=max_tokens, temperature=0, logprobs=True, top_logprobs=5,
        stream=True, messages=[{"role": "user", "content": prompt}])
    tokens: list[Token] = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            tokens.extend((e.token, e.logprob, {t.token: t.logprob for t in e.top_logprobs})
                          for e in chunk.choices[0].logprobs.content)
    return tokens


def first_divergence(a: list[Token], b: list[Token]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x[0] != y[0]:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


async def test_temperature_zero_alone_versus_among_fifteen_others(client: AsyncOpenAI) -> None:
    """Greedy output of one prompt, alone and batched with 15 other streams.

    Batched llama.cpp CPU kernels round differently from the single-row path,
    so where two tokens are nearly tied the greedy pick can flip. The test
    measures how often and at which token that happens, and checks that it is
    only ever such a near-tie: up to the divergence every shared token has the
    log probability within rounding noise (up to ~0.3 was seen: flash attention
    on the CPU accumulates in f16), and the token the batched run
    chose was among the solo run's top alternatives, close to its pick. A
    batching bug (another sequence's KV leaking in) fails both checks.
    """
    target = "Explain in three sentences why the sky is blue."
    others = [f"Write one sentence about {t}." for t in TOPICS[:15]]
    alone = await greedy_tokens(client, target, 64)
    assert len(alone) > 32
    divergences: list[int | None] = []
    # Two trials (four before deterministic mode existed: test_determinism.py now holds
    # the bit-for-bit claim; this one holds the default mode's near-tie bound).
    for _ in range(2):
        results = await asyncio.gather(
            greedy_tokens(client, target, 64), *(greedy_tokens(client, o, 64) for o in others)
        )
        batched = results[0]
        d = first_divergence(alone, batched)
        divergences.append(d)
        shared = len(alone) if d is None else d
        for i in range(shared):
            assert abs(alone[i][1] - batched[i][1]) < 1.0, (i, alone[i], batched[i])
        if d is not None and d < min(len(alone), len(batched)):
            chosen, alternatives = alone[d][1], alone[d][2]
            assert batched[d][0] in alternatives, (d, alone[d], batched[d])
            assert chosen - alternatives[batched[d][0]] < 1.0, (d, alone[d], batched[d])
    diverged = [d for d in divergences if d is not None]
    print(f"temperature 0, alone vs among 15 others: {len(diverged)}/{len(divergences)} trials "
          f"diverged, at tokens {diverged} of {len(alone)}")


async def test_disconnected_clients_free_their_slots(
    client: AsyncOpenAI, batch_server: LiveServer
) -> None:
    body = {"model": MODEL, "max_tokens": 1500, "stream": True, "logit_bias": {"2": -100},
            "messages": [{"role": "user", "content": "Tell me a very long story."}]}
    headers = {"Authorization": f"Bearer {batch_server.api_key}"}

    async def read_a_little() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream("POST", f"{batch_server.v1}/chat/completions", json=body,
                                   headers=headers) as r:
                seen = 0
                async for _ in r.aiter_lines():
                    seen += 1
                    if seen > 6:
                        return

    await asyncio.gather(*(read_a_little() for _ in range(4)))
    deadline = time.monotonic() + 3
    while metric(batch_server, "kathan_running_sequences") > 0:
        assert time.monotonic() < deadline, "cancelled sequences still running"
        await asyncio.sleep(0.05)
    # A non-streaming client that gives up is cancelled too.
    async with httpx.AsyncClient(timeout=0.5) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"{batch_server.v1}/chat/completions",
                            json={**body, "stream": False}, headers=headers)
    deadline = time.monotonic() + 3
    while metric(batch_server, "kathan_running_sequences") > 0:
        assert time.monotonic() < deadline, "abandoned non-streaming request still running"
        await asyncio.sleep(0.05)


async def test_shared_long_system_prompt_is_cached(client: AsyncOpenAI) -> None:
    system = ("You are the support assistant of Kathan Airlines. " +
              "Policies: bags up to 23 kg are free; seats can be changed online; " * 40)

    async def ttft_and_usage(question: str) -> tuple[float, int, int]:
        start = time.perf_counter()
        stream = await client.chat.completions.create(
            model=MODEL, max_tokens=8, temperature=0, stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "system", "content": system},
                      {"role": "user", "content": question}])
        first = None
        usage = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content and first is None:
                first = time.perf_counter() - start
            if chunk.usage:
                usage = chunk.usage
        assert first is not None and usage is not None
        details = usage.prompt_tokens_details
        assert details is not None
        return first, usage.prompt_tokens, details.cached_tokens or 0

    cold, prompt_tokens, cached_cold = await ttft_and_usage("Can I bring two bags?")
    warm, _, cached_warm = await ttft_and_usage("How do I change my seat?")
    print(f"prefix cache: {prompt_tokens} prompt tokens; cold TTFT {cold * 1000:.0f} ms "
          f"({cached_cold} cached), warm TTFT {warm * 1000:.0f} ms ({cached_warm} cached)")
    assert prompt_tokens > 600
    assert cached_warm > 600
    assert cached_warm > cached_cold
    assert warm < cold / 2


async def test_an_idle_prefix_cache_leaves_the_kv_while_others_run_and_comes_back(
    client: AsyncOpenAI, batch_server: LiveServer
) -> None:
    """While a sequence runs, idle prefix caches wait in host memory (so its tokens do not
    attend over their cells); a request that shares one gets it back, whole."""
    system = ("You are the archivist of the Kathan library. " +
              "Rule: every book returns within 14 days; a late book costs a coin a day; " * 30)
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": "How long can I keep a book?"}]

    async def ask() -> tuple[list[tuple[str, float]], int, int]:
        reply = await client.chat.completions.create(
            model=MODEL, max_tokens=16, temperature=0, logprobs=True, messages=messages)  # type: ignore[arg-type]
        assert reply.usage is not None and reply.choices[0].logprobs is not None
        details = reply.usage.prompt_tokens_details
        cached = details.cached_tokens or 0 if details is not None else 0
        tokens = [(e.token, e.logprob) for e in reply.choices[0].logprobs.content or []]
        return tokens, reply.usage.prompt_tokens, cached

    before, prompt_tokens, _ = await ask()
    assert prompt_tokens > 500
    # Its end-of-text tokens suppressed, so that it runs its 300 tokens.
    other = asyncio.create_task(stream_text(client, "Count from one to three hundred.",
                                            max_tokens=300, logit_bias={"0": -100, "2": -100}))
    for _ in range(500):
        if metric(batch_server, "kathan_running_sequences") >= 1:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    # Only the running stream's cells are in the KV: the system prompt's went to host memory.
    assert metric(batch_server, "kathan_kv_cells_used") < 400
    assert not other.done()
    after, _, cached = await ask()
    assert cached == prompt_tokens - 1  # all but the last prompt token came back
    # The same greedy reply from the restored cells, up to rounding (the cells' order may
    # differ, flash attention sums in cell order, and the batch now holds two sequences):
    # the same tokens with close log probabilities until a near-tie, if any, flips one.
    # Cells restored wrong would change the very first token's probability.
    shared = first_divergence(before, after)
    shared = len(before) if shared is None else shared
    assert shared >= 3, (before, after)
    assert all(abs(before[i][1] - after[i][1]) < 1.0 for i in range(shared)), (before, after)
    await other


async def test_n_choices_share_the_prompt(client: AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "Name a colour and say why you like it."}]
    r = await client.chat.completions.create(
        model=MODEL, max_tokens=24, temperature=1.0, seed=11, n=3, messages=messages)
    assert [c.index for c in r.choices] == [0, 1, 2]
    texts = [c.message.content for c in r.choices]
    assert all(texts) and len(set(texts)) > 1, "each choice samples with its own seed"
    assert all(c.finish_reason in ("stop", "length") for c in r.choices)
    assert r.usage is not None
    assert 3 <= r.usage.completion_tokens <= 3 * 24  # the sum over the choices
    # Greedy choices computed from the one shared prompt agree with each other,
    # streamed and not, on their first words (see below for why not longer). A first,
    # discarded request caches the prompt, so both compared requests start from the
    # same cached state (a prompt computed in one batch and a cached one can differ
    # in the last bits of the logits, enough to flip an early near-tie).
    await client.chat.completions.create(
        model=MODEL, max_tokens=1, temperature=0, n=2, messages=messages)
    greedy = await client.chat.completions.create(
        model=MODEL, max_tokens=16, temperature=0, n=2, messages=messages)
    assert greedy.choices[0].message.content[:10] == greedy.choices[1].message.content[:10]
    stream = await client.chat.completions.create(
        model=MODEL, max_tokens=16, temperature=0, n=2, messages=messages, stream=True)
    streamed = ["", ""]
    finishes: list[str | None] = [None, None]
    async for chunk in stream:
        for c in chunk.choices:
            streamed[c.index] += c.delta.content or ""
            finishes[c.index] = c.finish_reason or finishes[c.index]
    assert all(finishes)
    # Each choice is its own row of the batch, and a near-tie a few tokens in may
    # flip between rows and between requests: seen on a loaded machine, within one
    # streamed request ("The colour I'm most" / "The colour I like is") and across
    # two. A choice that did not get the shared prompt would differ from the start.
    assert [s[:10] for s in streamed] == [greedy.choices[0].message.content[:10]] * 2


async def test_logprobs_streamed_and_not(client: AsyncOpenAI) -> None:
    kw = dict(model=MODEL, max_tokens=12, temperature=0, logprobs=True, top_logprobs=3,
              messages=[{"role": "user", "content": "Say hello."}])
    r = await client.chat.completions.create(**kw)  # type: ignore[call-overload]
    content = r.choices[0].logprobs.content
    assert content and len(content) <= 12
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)
    assert "".join(e.token for e in content).startswith(r.choices[0].message.content or "")
    stream = await client.chat.completions.create(stream=True, **kw)  # type: ignore[call-overload]
    streamed = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            streamed.extend(chunk.choices[0].logprobs.content)
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [
        (e.token, round(e.logprob, 4)) for e in content]


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(
        tmp_path_factory.mktemp("tiny"),
        "local:\n  n_ctx: 2048\n  max_running: 2\n  max_queued: 2\n  queue_timeout: 1.5\n",
    )
    yield server
    stop_server(server)


async def test_overload_gets_a_fast_503_with_retry_after(tiny_server: LiveServer) -> None:
    body = {"model": MODEL, "max_tokens": 300, "logit_bias": {"2": -100},
            "messages": [{"role": "user", "content": "Tell me a long story."}]}
    headers = {"Authorization": f"Bearer {tiny_server.api_key}"}

    async def one(http: httpx.AsyncClient) -> tuple[int, float, httpx.Response]:
        start = time.perf_counter()
        r = await http.post(f"{tiny_server.v1}/chat/completions", json=body, headers=headers)
        return r.status_code, time.perf_counter() - start, r

    async with httpx.AsyncClient(timeout=60) as http:
        results = await asyncio.gather(*(one(http) for _ in range(8)))
    refused = [(t, r) for status, t, r in results if status == 503]
    served = [s for s, _, _ in results if s == 200]
    assert len(served) >= 2
    assert len(refused) >= 4  # 2 running + 2 queued fit; the rest are turned away
    for seconds, r in refused:
        assert r.headers["retry-after"].isdigit()
        assert r.json()["error"]["code"] == "engine_overloaded"
    # Refusals beyond the queue are immediate; queued ones time out after 1.5 s.
    assert min(t for t, _ in refused) < 0.5


async def test_sdk_sees_503_as_a_retryable_error(tiny_server: LiveServer) -> None:
    async with AsyncOpenAI(base_url=tiny_server.v1, api_key=tiny_server.api_key,
                           max_retries=0) as c:
        async def long() -> object:
            return await c.chat.completions.create(
                model=MODEL, max_tokens=200, logit_bias={"2": -100},
                messages=[{"role": "user", "content": "Story please."}])
        results = await asyncio.gather(*(long() for _ in range(6)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors and all(isinstance(e, openai.InternalServerError) and e.status_code == 503
                          for e in errors)

    # And the SDK does retry it: with retries allowed, every 503 it was given (6 requests
    # for 2 slots and 2 queue places make some) is followed by another attempt of that
    # request, after the Retry-After Kathan sent.
    answers: list[httpx.Response] = []

    async def seen(response: httpx.Response) -> None:
        answers.append(response)

    async with httpx.AsyncClient(event_hooks={"response": [seen]}, timeout=60) as http, \
            AsyncOpenAI(base_url=tiny_server.v1, api_key=tiny_server.api_key,
                        max_retries=1, http_client=http) as c:
        async def retried() -> object:
            return await c.chat.completions.create(
                model=MODEL, max_tokens=200, logit_bias={"2": -100},
                messages=[{"role": "user", "content": "Story please."}])
        results = await asyncio.gather(*(retried() for _ in range(6)), return_exceptions=True)
    refused = [a for a in answers if a.status_code == 503]
    assert refused and all(a.headers["retry-after"].isdigit() for a in refused)
    first_tries = 6
    retries = len(answers) - first_tries
    # Each refusal on a first try was retried once (a retry refused again is final).
    finals = [r for r in results if isinstance(r, Exception)]
    assert retries == len(refused) - len(finals), (len(answers), len(refused), len(finals))
    assert retries >= 1
    assert all(isinstance(e, openai.InternalServerError) for e in finals)
