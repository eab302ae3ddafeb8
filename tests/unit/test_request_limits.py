"""Per-request limits: a default max_tokens for requests that give none, and ceilings on
max_tokens and n, from the settings to every backend."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kathan.app import create_app
from kathan.backends.anthropic import to_anthropic
from kathan.backends.local import LocalBackend
from kathan.backends.openai import upstream_body
from kathan.backends.upstream import Deployment
from kathan.engine.template import CHATML_TEMPLATE, ChatTemplate
from kathan.protocol.chat import ChatCompletionRequest
from kathan.routing.registry import Ceilings, ModelEntry, ModelRegistry
from kathan.settings import RequestLimits, Settings
from tests.fakes import FakeBackend

KEY = "sk-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({**BODY, **fields})


def test_a_models_limits_win_and_the_rest_come_from_the_top_level() -> None:
    top = RequestLimits(default_max_tokens=512, max_tokens=4096, max_n=4)
    own = RequestLimits(max_tokens=1000)
    assert own.under(top) == RequestLimits(default_max_tokens=512, max_tokens=1000, max_n=4)
    settings = Settings(models=[{"id": "up", "deployments": [
        {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}],
        "requests": {"max_n": 2}}], requests={"default_max_tokens": 300})
    assert settings.models[0].requests.under(settings.requests) == RequestLimits(
        default_max_tokens=300, max_n=2)
    assert settings.local is not None
    # The local model's own default applies only where neither level sets one.
    assert settings.local.limits(settings.requests).default_max_tokens == 300
    assert Settings().local.limits(RequestLimits()).default_max_tokens == 1024  # type: ignore[union-attr]


def test_a_default_above_the_ceiling_is_lowered_to_it() -> None:
    settings = Settings(requests={"max_tokens": 16})
    assert settings.local is not None
    assert settings.local.limits(settings.requests).default_max_tokens == 16
    own = RequestLimits(default_max_tokens=2000, max_tokens=500)
    assert own.under(RequestLimits()).default_max_tokens == 500


@pytest.mark.parametrize(("fields", "param", "numbers"), [
    ({"max_tokens": 101}, "max_tokens", ("101", "100")),
    ({"max_completion_tokens": 500}, "max_completion_tokens", ("500", "100")),
    ({"n": 3}, "n", ("3", "2")),
])
def test_a_request_over_a_ceiling_is_a_400_that_gives_the_numbers(
    fields: dict[str, Any], param: str, numbers: tuple[str, str]
) -> None:
    backend = FakeBackend()
    registry = ModelRegistry([ModelEntry(id="fake", owned_by="t", created=1, backend=backend,
                                         ceilings=Ceilings(max_tokens=100, max_n=2))])
    app = create_app(Settings(api_keys=[KEY], accounts=False), registry=registry)
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json={**BODY, **fields}, headers=AUTH)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == param
        assert all(number in error["message"] for number in numbers), error["message"]
        assert backend.requests == []  # refused before the backend was asked
        ok = c.post("/v1/chat/completions", json={**BODY, "max_tokens": 100, "n": 2},
                    headers=AUTH)
        assert ok.status_code == 200


def test_upstreams_get_the_models_default_only_when_the_request_sets_no_limit() -> None:
    assert upstream_body(request(), "x", 300)["max_tokens"] == 300
    assert upstream_body(request(max_tokens=7), "x", 300)["max_tokens"] == 7
    assert "max_tokens" not in upstream_body(request(max_completion_tokens=7), "x", 300)
    assert "max_tokens" not in upstream_body(request(), "x", None)
    anthropic = Deployment(backend="anthropic", model="claude", default_max_tokens=300)
    assert to_anthropic(request(), anthropic)["max_tokens"] == 300
    assert to_anthropic(request(max_tokens=9), anthropic)["max_tokens"] == 9


def local_backend(n_ctx: int, default: int | None) -> LocalBackend:
    """The local backend over an engine stand-in: a chat template, a tokenizer of one
    token per character, and the context size (``build`` needs no more)."""
    engine = SimpleNamespace(
        ready=True, n_ctx=n_ctx, config=SimpleNamespace(n_slots=4),
        model=SimpleNamespace(info=SimpleNamespace(n_vocab=1000)),
        template=ChatTemplate(CHATML_TEMPLATE, bos_token="", eos_token="<|im_end|>"),
        tokenize_prompt=lambda text: list(range(len(text))),
    )
    return LocalBackend(engine, retry_after=1, default_max_tokens=default)  # type: ignore[arg-type]


def test_the_local_default_is_capped_by_what_fits_in_the_context() -> None:
    prompt = len(local_backend(4096, None).build(request())[0].prompt)
    assert local_backend(4096, 64).build(request())[0].max_tokens == 64
    assert local_backend(4096, 64).build(request(max_tokens=200))[0].max_tokens == 200
    # A default larger than the room left is the room left, not a 400.
    assert local_backend(prompt + 10, 64).build(request())[0].max_tokens == 10
    assert local_backend(prompt + 10, None).build(request())[0].max_tokens == 10
