"""The model catalogue: deployments that wait for their key (``if_key_set``), the
shipped ``kathan.example.yaml``, the 404 for an unknown model, and the defaults that
match the seeds (a voice reply's max_tokens, usage at every stream's end)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from kathan.app import create_app
from kathan.errors import ModelNotFoundError
from kathan.routing.build import ConfigError, LocalModel, build_registry
from kathan.routing.registry import Ceilings, ModelEntry, ModelRegistry
from kathan.routing.router import Router
from kathan.settings import Settings
from tests.fakes import FakeBackend
from tests.unit.test_accounts_api import bearer, client_with, new_key
from tests.unit.test_api import AUTH, KEY, sse_events

EXAMPLE = Path(__file__).resolve().parents[2] / "kathan.example.yaml"
PROVIDER_KEYS = ("GROQ_API_KEY", "TOGETHER_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
                 "GEMINI_API_KEY")
VOICE = {"finetune": True, "language": "en", "gender": "female", "accent": "american"}
ASK = {"model": "fake", "messages": [{"role": "user", "content": "Hi, introduce yourself?"}]}


def upstream(model_id: str, *keys: str | None, **extra: Any) -> dict[str, Any]:
    """A model with one openai deployment per key variable (None: no key at all)."""
    deployments = []
    for i, var in enumerate(keys):
        d: dict[str, Any] = {"backend": "openai", "base_url": f"http://127.0.0.1:9/v{i}"}
        if var is not None:
            d |= {"api_key_env": var, "if_key_set": True}
        deployments.append(d)
    return {"id": model_id, "deployments": deployments, **extra}


async def build(settings: Settings, local: FakeBackend | None = None) -> ModelRegistry:
    """The registry, the local model (if any) answered by ``local``."""
    models = [LocalModel(m, local) for m in settings.local_models] if local is not None else []
    async with aiohttp.ClientSession() as session:
        registry, _ = build_registry(settings, local=models, session=session)
    return registry


def routes(registry: ModelRegistry, name: str) -> list[tuple[str, str, str | None]]:
    """(base_url, upstream model, key) of each deployment serving ``name``."""
    router = registry.resolve(name).backend
    assert isinstance(router, Router)
    return [(r.deployment.base_url, r.deployment.model, r.deployment.api_key)
            for r in router.routes]


# --- if_key_set ---------------------------------------------------------------------------

async def test_a_deployment_waiting_for_an_unset_key_is_left_out_with_one_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SET_KEY", "k-set")
    monkeypatch.delenv("UNSET_KEY", raising=False)
    caplog.set_level(logging.INFO, logger="kathan")
    registry = await build(Settings(local=None, models=[
        upstream("both", "SET_KEY", "UNSET_KEY"), upstream("neither", "UNSET_KEY")]))
    assert [name for name, _ in registry.names()] == ["both"]
    assert routes(registry, "both") == [("http://127.0.0.1:9/v0", "both", "k-set")]
    with pytest.raises(ModelNotFoundError):
        registry.resolve("neither")
    lines = [r.getMessage() for r in caplog.records if "UNSET_KEY" in r.getMessage()]
    assert lines == [
        "model both: deployment both#1 (http://127.0.0.1:9/v1) left out: UNSET_KEY not set",
        "model neither is not served: UNSET_KEY not set",
    ]


async def test_an_empty_key_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMPTY_KEY", "")
    registry = await build(Settings(local=None, models=[upstream("m", "EMPTY_KEY")]))
    assert registry.names() == []


async def test_without_the_opt_in_an_unset_key_still_stops_the_start(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNSET_KEY", raising=False)
    entry = upstream("m", "UNSET_KEY")
    entry["deployments"][0]["if_key_set"] = False
    with pytest.raises(ConfigError, match="m#0: the environment variable UNSET_KEY is not set"):
        await build(Settings(local=None, models=[entry]))


def test_the_opt_in_needs_a_key_variable() -> None:
    entry = upstream("m", None)
    entry["deployments"][0]["if_key_set"] = True
    with pytest.raises(ValidationError, match="if_key_set needs api_key_env") as info:
        Settings(local=None, models=[entry])
    assert info.value.errors()[0]["loc"][-1] == "if_key_set"


async def test_fallbacks_and_voice_models_naming_a_model_left_out_are_dropped(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SET_KEY", "k")
    monkeypatch.delenv("UNSET_KEY", raising=False)
    registry = await build(Settings(local=None, models=[
        upstream("a", "SET_KEY", fallbacks=["b-alias"], voice_model="b"),
        upstream("b", "UNSET_KEY", aliases=["b-alias"]),
    ]))
    entry = registry.resolve("a")
    assert entry.voice_model is None
    assert isinstance(entry.backend, Router) and entry.backend.fallbacks == ()
    # A name that no model has is still a typo, key or not.
    with pytest.raises(ConfigError, match="fallback 'nope' is not a model"):
        await build(Settings(local=None, models=[upstream("a", "SET_KEY", fallbacks=["nope"])]))


# --- kathan.example.yaml --------------------------------------------------------------------

@pytest.fixture
def no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in PROVIDER_KEYS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


async def test_the_example_serves_exactly_the_models_whose_keys_are_set(
    no_provider_keys: pytest.MonkeyPatch
) -> None:
    no_provider_keys.setenv("GROQ_API_KEY", "gsk-1")
    no_provider_keys.setenv("ANTHROPIC_API_KEY", "ak-1")
    registry = await build(Settings(config_file=EXAMPLE, local=None))
    assert [name for name, _ in registry.names()] == [
        "gpt-oss-120b", "llama-4-maverick", "claude-3-5-sonnet",
        "openai/gpt-oss-120b", "meta-llama/llama-4-maverick", "anthropic/claude-3-5-sonnet"]
    groq = "https://api.groq.com/openai/v1"
    assert routes(registry, "openai/gpt-oss-120b") == [(groq, "openai/gpt-oss-120b", "gsk-1")]
    assert routes(registry, "llama-4-maverick") == [
        (groq, "meta-llama/llama-4-maverick-17b-128e-instruct", "gsk-1")]
    assert routes(registry, "claude-3-5-sonnet") == [
        ("https://api.anthropic.com", "claude-3-5-sonnet-20241022", "ak-1")]
    for name in ("gpt-4", "gpt-4o", "gemini-2.0-flash"):
        with pytest.raises(ModelNotFoundError):
            registry.resolve(name)


async def test_the_example_with_every_key_serves_every_seed_model(
    no_provider_keys: pytest.MonkeyPatch
) -> None:
    for var in PROVIDER_KEYS:
        no_provider_keys.setenv(var, f"{var.lower()}-value")
    registry = await build(Settings(config_file=EXAMPLE, local=None))
    assert [e.id for e in registry.entries] == [
        "gpt-oss-120b", "llama-4-maverick", "gpt-4", "gpt-4o", "claude-3-5-sonnet",
        "gemini-2.0-flash"]
    together = "https://api.together.xyz/v1"
    assert routes(registry, "gpt-oss-120b")[1] == (
        together, "openai/gpt-oss-120b", "together_api_key-value")
    assert routes(registry, "meta-llama/llama-4-maverick")[1] == (
        together, "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "together_api_key-value")
    assert routes(registry, "gpt-4") == [
        ("https://api.openai.com/v1", "gpt-4", "openai_api_key-value")]
    assert routes(registry, "openai/gpt-4o") == [
        ("https://api.openai.com/v1", "gpt-4o", "openai_api_key-value")]
    assert routes(registry, "gemini-2.0-flash") == [
        ("https://generativelanguage.googleapis.com", "gemini-2.0-flash",
         "gemini_api_key-value")]
    # The reasoning model gets room to think in voice mode; the others the default.
    assert registry.resolve("gpt-oss-120b").voice_max_tokens == 512
    assert registry.resolve("gpt-4").voice_max_tokens == 150


def example_with_local_aliases() -> str:
    """The example with its documented local alias line in place of the default one."""
    text = EXAMPLE.read_text(encoding="utf-8")
    documented = [line for line in text.splitlines() if line.startswith("  # aliases: [default,")]
    assert len(documented) == 1, "the example documents one local alias line"
    return text.replace("  aliases: [default]\n", "", 1).replace(
        documented[0], documented[0].replace("# ", "", 1))


async def test_the_documented_local_aliases_answer_the_seed_names_from_the_engine(
    no_provider_keys: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "kathan.yaml"
    config.write_text(example_with_local_aliases(), encoding="utf-8")
    local = FakeBackend()
    registry = await build(Settings(config_file=config), local=local)
    for name in ("gpt-oss-120b", "openai/gpt-oss-120b", "llama-4-maverick",
                 "meta-llama/llama-4-maverick", "default"):
        assert registry.resolve(name).backend is local
    # Once a provider's key is set too, one name would be served twice: refused.
    no_provider_keys.setenv("GROQ_API_KEY", "gsk-1")
    with pytest.raises(ConfigError, match="'gpt-oss-120b' is configured twice"):
        await build(Settings(config_file=config), local=local)


# --- the 404 for an unknown model ---------------------------------------------------------

def test_the_404_lists_a_few_models_and_how_to_add_one() -> None:
    names = [f"m{i}" for i in range(11)]
    message = ModelNotFoundError("gpt-4", names).message
    assert message.startswith("The model 'gpt-4' does not exist. This key may use: "
                              "m0, m1, m2, m3, m4, m5, m6, m7 and 3 more (GET /v1/models")
    assert "m8" not in message
    assert "`models:`" in message and "`local.aliases`" in message
    assert "kathan.example.yaml" in message
    assert "This key may use: no model." in ModelNotFoundError("x", []).message


def test_an_unknown_model_is_a_404_listing_what_the_key_may_use() -> None:
    registry = ModelRegistry([ModelEntry(id="fake", owned_by="t", created=1,
                                         backend=FakeBackend(), aliases=("default",))])
    app = create_app(Settings(api_keys=[KEY], accounts=False), registry=registry)
    with TestClient(app) as client:
        for r in (client.post("/v1/chat/completions", json={**ASK, "model": "gpt-4"},
                              headers=AUTH),
                  client.get("/v1/models/gpt-4", headers=AUTH)):
            assert r.status_code == 404
            error = r.json()["error"]
            assert (error["code"], error["param"]) == ("model_not_found", "model")
            assert error["message"].startswith(
                "The model 'gpt-4' does not exist. This key may use: fake. ")


def test_the_404_respects_the_keys_allow_list(tmp_path: Path) -> None:
    with client_with(tmp_path) as client:
        key = new_key(client, models=["alias"])["key"]
        for r in (client.post("/v1/chat/completions", json={**ASK, "model": "gpt-4"},
                              headers=bearer(key)),
                  client.get("/v1/models/other", headers=bearer(key))):
            assert r.status_code == 404, r.text
            message = r.json()["error"]["message"]
            listed = message.split("This key may use: ")[1].split(". An operator")[0]
            assert listed == "fake"  # not "other" nor "broken", which this key may not use


# --- a voice reply's max_tokens -----------------------------------------------------------

@pytest.fixture
def voice_client() -> Iterator[tuple[TestClient, FakeBackend, FakeBackend]]:
    plain, capped = FakeBackend(["Hi."]), FakeBackend(["Hi."])
    registry = ModelRegistry([
        ModelEntry(id="fake", owned_by="t", created=1, backend=plain),
        ModelEntry(id="capped", owned_by="t", created=1, backend=capped,
                   ceilings=Ceilings(max_tokens=100), voice_max_tokens=400),
    ])
    with TestClient(create_app(Settings(api_keys=[KEY], accounts=False),
                               registry=registry)) as client:
        yield client, plain, capped


def test_a_voice_request_without_max_tokens_gets_the_voice_default(
    voice_client: tuple[TestClient, FakeBackend, FakeBackend]
) -> None:
    client, plain, capped = voice_client
    for body in ({**ASK, **VOICE}, {**ASK, "language": "es"}):
        assert client.post("/v1/chat/completions", json=body, headers=AUTH).status_code == 200
    assert [r.max_tokens for r in plain.requests] == [150, 150]
    # The request's own value wins, either spelling.
    client.post("/v1/chat/completions", json={**ASK, **VOICE, "max_tokens": 1000}, headers=AUTH)
    client.post("/v1/chat/completions", json={**ASK, **VOICE, "max_completion_tokens": 900},
                headers=AUTH)
    assert (plain.requests[2].max_tokens, plain.requests[3].max_completion_tokens) == (1000, 900)
    assert plain.requests[3].max_tokens is None
    # Without the voice fields nothing is added.
    client.post("/v1/chat/completions", json=ASK, headers=AUTH)
    assert plain.requests[4].max_tokens is None
    # A model's own default (400) stays under its ceiling (100).
    client.post("/v1/chat/completions", json={**ASK, **VOICE, "model": "capped"}, headers=AUTH)
    assert capped.requests[0].max_tokens == 100


def test_the_voice_default_stays_within_the_keys_limit(tmp_path: Path) -> None:
    with client_with(tmp_path) as client:
        key = new_key(client, limits={"max_tokens": 80})["key"]
        # 150 would be over the key's 80: a 400 had the default not been lowered to it.
        r = client.post("/v1/chat/completions", json={**ASK, **VOICE}, headers=bearer(key))
        assert r.status_code == 200, r.text


def test_the_voice_variant_gets_its_own_default() -> None:
    base, tuned = FakeBackend(["Base."]), FakeBackend(["Tuned."])
    registry = ModelRegistry([
        ModelEntry(id="fake", owned_by="t", created=1, backend=base, voice_model="fake-voice"),
        ModelEntry(id="fake-voice", owned_by="t", created=1, backend=tuned,
                   voice_max_tokens=60),
    ])
    with TestClient(create_app(Settings(api_keys=[KEY], accounts=False),
                               registry=registry)) as client:
        r = client.post("/v1/chat/completions", json={**ASK, **VOICE}, headers=AUTH)
    assert r.json()["model"] == "fake-voice"
    assert [q.max_tokens for q in tuned.requests] == [60]


async def test_voice_max_tokens_comes_from_the_model_then_the_top_level_then_150(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SET_KEY", "k")
    models = [upstream("own", "SET_KEY", requests={"voice_max_tokens": 400}),
              upstream("inherits", "SET_KEY")]
    registry = await build(Settings(local=None, models=models))
    assert [e.voice_max_tokens for e in registry.entries] == [400, 150]
    registry = await build(Settings(local=None, models=models,
                                    requests={"voice_max_tokens": 200}))  # type: ignore[arg-type]
    assert [e.voice_max_tokens for e in registry.entries] == [400, 200]


# --- usage at the end of every stream -------------------------------------------------------

def streamed(always: bool, **body: Any) -> list[dict[str, Any]]:
    registry = ModelRegistry([ModelEntry(id="fake", owned_by="t", created=1,
                                         backend=FakeBackend(["Hello", "!"]))])
    settings = Settings(api_keys=[KEY], accounts=False, always_include_usage=always)
    with TestClient(create_app(settings, registry=registry)) as client:
        r = client.post("/v1/chat/completions", json={**ASK, "stream": True, **body},
                        headers=AUTH)
    events = [data for _, data in sse_events(r.text)]
    assert events[-1] == "[DONE]"
    return [json.loads(data) for data in events[:-1]]


def test_usage_is_sent_only_when_asked_by_default() -> None:
    assert all(chunk.get("usage") is None for chunk in streamed(False))
    last = streamed(False, stream_options={"include_usage": True})[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 2


def test_always_include_usage_ends_every_stream_with_usage() -> None:
    chunks = streamed(True)
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (4, 2, 6)
    assert all(chunk.get("usage") is None for chunk in chunks[:-1])
