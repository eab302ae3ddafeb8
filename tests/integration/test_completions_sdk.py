"""Legacy completions (/v1/completions) through the official openai SDK, against the
real embedded model: the raw prompt continued without the chat template, streamed
and not alike, echo, the legacy logprobs, n, token-id prompts, what is refused, and
the ledger."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import LiveServer

MODEL = "smollm2-135m-instruct"
PROMPT = "The capital of France is"


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=live_server.v1, api_key=live_server.api_key, max_retries=0) as c:
        yield c


def test_the_prompt_is_continued_as_it_is(client: OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    [choice] = r.choices
    assert choice.text and choice.finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.completion_tokens > 0
    # No chat template around it: the prompt is its own few tokens.
    chat = client.chat.completions.create(model=MODEL, max_tokens=1,
                                          messages=[{"role": "user", "content": PROMPT}])
    assert chat.usage is not None
    assert r.usage.prompt_tokens < 10 < chat.usage.prompt_tokens
    # The same text streamed, and with echo the prompt first.
    pieces = [c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, stream=True, echo=True)
        if c.choices]
    assert pieces[0] == PROMPT and len(pieces) > 2
    assert "".join(pieces) == PROMPT + choice.text


def test_legacy_logprobs(client: OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0,
                                  logprobs=3)
    [choice] = r.choices
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert r.usage is not None and len(lp.tokens) == r.usage.completion_tokens
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) <= 3 and logprob <= 0
        assert top[token] == logprob  # greedy: the chosen token is among the best


def test_n_and_token_id_prompts(client: OpenAI) -> None:
    text = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0)
    ids = client.completions.create(model=MODEL, prompt=[[504, 3575]], max_tokens=4,
                                    temperature=0, n=2)
    assert [c.index for c in ids.choices] == [0, 1]
    assert ids.choices[0].text == ids.choices[1].text  # greedy: the same continuation
    assert ids.usage is not None and ids.usage.prompt_tokens == 2
    assert text.choices[0].text


@pytest.mark.parametrize(("extra", "param"), [
    ({"suffix": "and so on"}, "suffix"),
    ({"best_of": 2}, "best_of"),
    ({"echo": True, "logprobs": 1}, "echo"),
    ({"prompt": ["one", "two"]}, "prompt"),
    ({"prompt": [10**9]}, "prompt"),
    ({"max_tokens": 100_000}, "max_tokens"),
])
def test_what_cannot_be_honoured_is_a_400_naming_it(
    client: OpenAI, extra: dict[str, object], param: str
) -> None:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, **extra}
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(**body)  # type: ignore[call-overload]
    assert error.value.param == param, error.value.body


def test_each_completion_gets_a_ledger_row_and_limits_apply(live_server: LiveServer) -> None:
    admin = {"Authorization": f"Bearer {live_server.api_key}"}
    with httpx.Client(base_url=live_server.base_url, headers=admin, timeout=60) as http:
        account = http.post("/admin/accounts", json={"name": "completions"}).json()
        key = http.post("/admin/keys", json={"account_id": account["id"], "name": "c",
                                             "limits": {"rpm": 2}}).json()["key"]
    with OpenAI(base_url=live_server.v1, api_key=key, max_retries=0) as c:
        for _ in range(2):
            c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2)
        with pytest.raises(openai.RateLimitError):
            c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2)
    time.sleep(0.5)  # the ledger writes within ledger_flush_seconds
    rows = httpx.get(f"{live_server.v1}/usage", headers={"Authorization": f"Bearer {key}"},
                     timeout=30).json()["data"]
    assert sum(r["requests"] for r in rows) == 3 and sum(r["rate_limited"] for r in rows) == 1
    assert sum(r["completion_tokens"] for r in rows) == 4


def test_without_max_tokens_a_completion_gets_sixteen(client: OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="Once upon a time", temperature=0)
    assert r.usage is not None
    assert r.usage.completion_tokens == 16 or r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens <= 16
