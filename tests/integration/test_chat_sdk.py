"""The official openai SDK against a live Kathan serving the embedded model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from kathan.app import embedded_model_path
from kathan.engine.llama import LlamaModel, init_backend
from tests.conftest import LiveServer

MODEL = "smollm2-135m-instruct"
ASK = [{"role": "user", "content": "Write two sentences about the sea."}]


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=live_server.v1, api_key=live_server.api_key, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def vocab() -> Iterator[LlamaModel]:
    init_backend()
    model = LlamaModel(embedded_model_path())
    yield model
    model.close()


def complete(client: OpenAI, **kw: object) -> openai.types.chat.ChatCompletion:
    args: dict[str, object] = {"model": MODEL, "messages": ASK, "max_tokens": 40}
    args.update(kw)
    return client.chat.completions.create(**args)  # type: ignore[call-overload, no-any-return]


def stream_text(client: OpenAI, **kw: object) -> tuple[str, str | None, list[object]]:
    args: dict[str, object] = {"model": MODEL, "messages": ASK, "max_tokens": 40, "stream": True}
    args.update(kw)
    chunks = list(client.chat.completions.create(**args))  # type: ignore[call-overload]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = next((c.choices[0].finish_reason for c in chunks if c.choices and
                   c.choices[0].finish_reason), None)
    return text, finish, chunks


def test_json_completion_has_real_usage(client: OpenAI) -> None:
    r = complete(client, temperature=0)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == MODEL
    assert r.created > 0
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # A longer prompt is counted as longer.
    longer = complete(client, temperature=0, messages=[
        {"role": "user", "content": "Write two sentences about the sea. " * 5}])
    assert longer.usage is not None
    assert longer.usage.prompt_tokens > r.usage.prompt_tokens + 20


def test_length_finish_counts_exactly_max_tokens(client: OpenAI) -> None:
    r = complete(client, temperature=0, max_tokens=5,
                 messages=[{"role": "user", "content": "Tell me a long story about a dragon."}])
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 5
    r2 = complete(client, temperature=0, max_completion_tokens=3, max_tokens=None,
                  messages=[{"role": "user", "content": "Tell me a long story about a dragon."}])
    assert r2.choices[0].finish_reason == "length"
    assert r2.usage is not None and r2.usage.completion_tokens == 3


def test_stream_shape_and_include_usage(client: OpenAI) -> None:
    text, finish, chunks = stream_text(client, temperature=0,
                                       stream_options={"include_usage": True})
    first = chunks[0]
    assert first.choices[0].delta.role == "assistant"  # type: ignore[attr-defined]
    ids = {c.id for c in chunks}  # type: ignore[attr-defined]
    assert len(ids) == 1
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL  # type: ignore[attr-defined]
               and c.created for c in chunks)
    assert finish in ("stop", "length")
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []  # type: ignore[attr-defined]
    assert usage_chunk.usage.completion_tokens > 0  # type: ignore[attr-defined]
    assert text


def test_stream_equals_non_stream_at_temperature_zero(client: OpenAI) -> None:
    r = complete(client, temperature=0)
    text, finish, _ = stream_text(client, temperature=0)
    assert text == r.choices[0].message.content
    assert finish == r.choices[0].finish_reason


def test_temperature_zero_is_deterministic(client: OpenAI) -> None:
    outs = {complete(client, temperature=0).choices[0].message.content for _ in range(3)}
    assert len(outs) == 1


def test_seed_gives_the_same_text(client: OpenAI) -> None:
    complete(client, temperature=1.0, seed=1234)  # computes the prompt's KV once
    same = {complete(client, temperature=1.0, seed=1234).choices[0].message.content
            for _ in range(3)}
    assert len(same) == 1
    others = {complete(client, temperature=1.0, seed=s).choices[0].message.content
              for s in (1, 2, 3, 4)}
    assert len(others | same) > 1, "different seeds should give different samples"


def test_stop_string_spanning_tokens_is_cut_and_never_emitted(client: OpenAI) -> None:
    full = complete(client, temperature=0, max_tokens=40).choices[0].message.content or ""
    assert len(full) > 30
    # Pick a stop string from the middle that spans several tokens.
    stop = full[12:22]
    expected = full[: full.index(stop)]
    r = complete(client, temperature=0, max_tokens=40, stop=[stop, "@@@never@@@"])
    assert r.choices[0].message.content == expected
    assert r.choices[0].finish_reason == "stop"
    text, finish, _ = stream_text(client, temperature=0, stop=stop)
    assert text == expected
    assert finish == "stop"


def test_logit_bias_forces_and_bans_tokens(client: OpenAI, vocab: LlamaModel) -> None:
    banana = vocab.tokenize(" banana", add_special=False, parse_special=False)
    assert len(banana) == 1
    r = complete(client, temperature=0, max_tokens=4, logit_bias={str(banana[0]): 100})
    assert r.choices[0].message.content == " banana" * 4
    plain = complete(client, temperature=0, max_tokens=8)
    first = vocab.tokenize(plain.choices[0].message.content or "", add_special=False)[0]
    banned = complete(client, temperature=0, max_tokens=8, logit_bias={str(first): -100})
    assert banned.choices[0].message.content != plain.choices[0].message.content


def test_penalties_and_llama_extras_change_nothing_unexpected(client: OpenAI) -> None:
    r = complete(client, temperature=0.7, top_p=0.9, presence_penalty=0.5,
                 frequency_penalty=0.5, seed=7,
                 extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1})
    assert r.choices[0].message.content
    # A strong repetition penalty changes a greedy answer.
    plain = complete(client, temperature=0, max_tokens=40)
    penalised = complete(client, temperature=0, max_tokens=40,
                         extra_body={"repetition_penalty": 2.0})
    assert penalised.choices[0].message.content != plain.choices[0].message.content


def test_models(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL, "default"]
    model = client.models.retrieve("default")
    assert model.owned_by and model.created
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_alias_default_works(client: OpenAI) -> None:
    r = complete(client, model="default", temperature=0, max_tokens=3)
    assert r.model == MODEL


def test_bad_key_is_401(live_server: LiveServer) -> None:
    with OpenAI(base_url=live_server.v1, api_key="sk-wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(model=MODEL, messages=ASK)  # type: ignore[arg-type]
    assert info.value.status_code == 401
    assert info.value.response.headers["www-authenticate"] == "Bearer"
    assert info.value.response.json()["detail"] == "Invalid API key"


def test_validation_error_is_422_with_detail(client: OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        complete(client, temperature=5)
    detail = info.value.response.json()["detail"]
    assert detail[0]["loc"] == ["body", "temperature"]
    assert {"loc", "msg", "type"} <= detail[0].keys()


def test_unknown_model_is_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        complete(client, model="gpt-nothing")
    assert info.value.code == "model_not_found"


def test_context_overflow_is_400_with_both_numbers(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        complete(client, max_tokens=5000)
    message = str(info.value.response.json()["error"]["message"])
    assert "2048" in message and "5000" in message
    long_prompt = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(openai.BadRequestError) as info:
        complete(client, messages=long_prompt, max_tokens=None)
    assert info.value.code == "context_length_exceeded"
    assert "2048" in info.value.response.json()["error"]["message"]


def test_choices_that_cannot_all_fit_are_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        complete(client, n=4, max_tokens=600)  # each fits alone; four do not share 2048 cells
    assert info.value.code == "context_length_exceeded"
    error = info.value.response.json()["error"]
    assert error["param"] == "n"
    assert "2048" in error["message"] and "600" in error["message"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
         "messages[0].content"),
    ],
)
def test_later_features_get_400_naming_the_field(
    client: OpenAI, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        complete(client, **kwargs)
    body = info.value.response.json()
    assert body["error"]["param"] == field
    assert f"'{field}'" in body["error"]["message"]


def test_text_parts_and_response_format_text_are_served(client: OpenAI) -> None:
    r = complete(client, temperature=0, response_format={"type": "text"}, messages=[
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Say hello."}]}])
    assert r.choices[0].message.content


def test_body_too_large_is_413(live_server: LiveServer) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]}
    r = httpx.post(f"{live_server.v1}/chat/completions", json=body,
                   headers={"Authorization": f"Bearer {live_server.api_key}"}, timeout=30)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_health_and_ready(live_server: LiveServer) -> None:
    assert httpx.get(f"{live_server.base_url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{live_server.base_url}/ready").json() == {"status": "ready"}


def test_embedded_model_is_found_without_importing_llm() -> None:
    path = embedded_model_path()
    assert isinstance(path, Path) and path.is_file()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_request_limits_from_the_config(tmp_path: Path) -> None:
    # A default max_tokens for requests that give none, and ceilings with their numbers.
    from tests.conftest import start_server, stop_server

    server = start_server(tmp_path, "local:\n  n_ctx: 512\n  requests:\n"
                          "    default_max_tokens: 6\n    max_tokens: 40\n    max_n: 2\n")
    try:
        with OpenAI(base_url=server.v1, api_key=server.api_key, max_retries=0) as c:
            r = c.chat.completions.create(
                model=MODEL, logit_bias={"2": -100},  # no end of text: only the cap stops it
                messages=[{"role": "user", "content": "Tell me a long story."}])
            assert r.usage is not None and r.usage.completion_tokens == 6
            assert r.choices[0].finish_reason == "length"
            for kw, param, words in (({"max_tokens": 41}, "max_tokens", "is 41, but"),
                                     ({"n": 3}, "n", "at most 2 choices")):
                with pytest.raises(openai.BadRequestError) as info:
                    c.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": "hi"}],
                        **kw)  # type: ignore[call-overload]
                assert info.value.body["param"] == param  # type: ignore[index]
                assert words in info.value.message
    finally:
        stop_server(server)
