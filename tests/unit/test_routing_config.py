"""Configured models: the registry built from settings, and configurations refused."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from kathan.routing.build import ConfigError, build_registry
from kathan.settings import Settings


def model(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "deployments": [
        {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}], **extra}


async def test_minimal_models_build_with_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(local=None, models=[model("gpt-4", aliases=["openai/gpt-4"])])
    async with aiohttp.ClientSession() as session:
        registry, routers = build_registry(settings, session=session)
    assert [name for name, _ in registry.names()] == ["gpt-4", "openai/gpt-4"]
    assert routers[0].routes[0].deployment.model == "gpt-4"  # defaults to the id


@pytest.mark.parametrize(
    ("models", "words"),
    [
        ([model("a", fallbacks=["b"]), model("b", fallbacks=["a"])], "fallbacks loop"),
        ([model("a", fallbacks=["a"])], "fallbacks loop"),
        ([model("a", fallbacks=["nope"])], "is not a model"),
        ([model("a"), model("a")], "configured twice"),
        ([model("a", voice_model="nope")], "voice_model 'nope' is not a model"),
        ([model("a", aliases=["b"], voice_model="b")], "voice_model names the model itself"),
    ],
)
async def test_bad_model_configurations_are_refused(models: list[Any], words: str) -> None:
    settings = Settings(local=None, models=models)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigError, match=words):
            build_registry(settings, session=session)


async def test_missing_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    entry = model("a")
    entry["deployments"][0]["api_key_env"] = "NO_SUCH_KEY_VAR"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR"):
            build_registry(Settings(local=None, models=[entry]), session=session)


async def test_a_voice_variant_is_kept_on_the_entry() -> None:
    settings = Settings(local=None, models=[model("a", voice_model="a-voice"), model("a-voice")])
    async with aiohttp.ClientSession() as session:
        registry, _ = build_registry(settings, session=session)
    assert registry.resolve("a").voice_model == "a-voice"


async def test_the_deadline_and_the_queue_time_reach_every_router() -> None:
    settings = Settings(local=None, models=[model("a"), model("b")],
                        routing={"deadline_seconds": 12, "queue_seconds": 3})
    async with aiohttp.ClientSession() as session:
        _, routers = build_registry(settings, session=session)
    assert [(r.deadline, r.queue_seconds) for r in routers] == [(12, 3), (12, 3)]
    defaults = Settings(local=None).routing
    assert (defaults.deadline_seconds, defaults.queue_seconds) == (30, 10)
