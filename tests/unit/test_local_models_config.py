"""``local:`` as one mapping or a list of models: the settings, the registry built from
them, the configurations refused, and each model's memory need read from its GGUF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kathan.app import embedded_model_path
from kathan.cli_config import ConfigFault, load_settings
from kathan.cli_models import check_memory, local_needs, report
from kathan.engine.gguf import model_shape
from kathan.routing.build import ConfigError, LocalModel, build_registry
from kathan.settings import Settings
from tests.fakes import FakeBackend
from tests.tiny_bert import tiny_bert


def settings_from(tmp_path: Path, text: str) -> Settings:
    config = tmp_path / "kathan.yaml"
    config.write_text(text)
    return load_settings({"config_file": config})


def test_one_mapping_and_a_list_give_the_same_models(tmp_path: Path) -> None:
    one = settings_from(tmp_path, "local:\n  id: m\n  n_ctx: 1024\n")
    assert [(m.id, m.aliases, m.n_ctx) for m in one.local_models] == [("m", ["default"], 1024)]
    several = settings_from(tmp_path, "local:\n  - id: m\n  - id: e\n    chat: false\n"
                                      "    pooling: cls\n  - id: x\n    aliases: [y]\n")
    # `default` names the first model only, unless a model sets its own aliases.
    assert [(m.id, m.aliases, m.chat, m.pooling) for m in several.local_models] == [
        ("m", ["default"], True, None), ("e", [], False, "cls"), ("x", ["y"], True, None)]
    assert settings_from(tmp_path, "local: null\n").local_models == []


@pytest.mark.parametrize(("text", "line"), [
    ("local:\n  - id: a\n  - id: b\n    n_ctxx: 9\n",
     "local[1].n_ctxx: unknown setting (did you mean n_ctx?)"),
    ("local:\n  pooling: none\n", "local.pooling: pooling none gives a vector per token"),
    ("local:\n  - id: a\n    chat: false\n    embeddings: false\n",
     "local[0]: model a serves nothing: chat and embeddings are both false"),
])
def test_a_bad_local_model_is_one_line_naming_where(tmp_path: Path, text: str, line: str) -> None:
    with pytest.raises(ConfigFault) as fault:
        settings_from(tmp_path, text)
    assert f"kathan.yaml: {line}" in str(fault.value)


def _upstream(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "deployments": [
        {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}], **extra}


async def _build(settings: Settings) -> Any:
    local = [LocalModel(m, FakeBackend()) for m in settings.local_models]
    async with aiohttp.ClientSession() as session:
        return build_registry(settings, local=local, session=session)[0]


@pytest.mark.parametrize(("local", "models", "words"), [
    ([{"id": "a"}, {"id": "gpt-4"}], [_upstream("gpt-4")],
     "model name 'gpt-4' is configured twice: local model gpt-4 (id) and model gpt-4 (id)"),
    ([{"id": "a"}, {"id": "a"}], [],
     "model name 'a' is configured twice: local model a (id) and local model a (id)"),
    ([{"id": "a"}, {"id": "b"}], [{"id": "r", "deployments": [{"backend": "local"}]}],
     "deployment r#0: backend local needs model: which local model it routes to (a, b)"),
    ([{"id": "a"}], [{"id": "r", "deployments": [{"backend": "local", "model": "z"}]}],
     "deployment r#0: model 'z' is not a local model (local models: a)"),
    ([{"id": "a"}, {"id": "e", "chat": False}],
     [{"id": "r", "deployments": [{"backend": "local", "model": "e"}]}],
     "local model e is an embedding model (chat: false)"),
])
async def test_models_that_cannot_be_served_together_are_refused(
    local: list[Any], models: list[Any], words: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        await _build(Settings(local=local, models=models))
    assert words in str(refused.value)


async def test_a_local_deployment_routes_to_the_local_model_it_names() -> None:
    settings = Settings(local=[{"id": "a"}, {"id": "b", "aliases": ["bee"]}], models=[
        {"id": "r", "deployments": [{"backend": "local", "model": "bee"}]}])
    local = [LocalModel(m, FakeBackend()) for m in settings.local_models]
    async with aiohttp.ClientSession() as session:
        registry, [router] = build_registry(settings, local=local, session=session)
    assert router.routes[0].backend is local[1].backend
    assert registry.resolve("default").id == "a"


def test_memory_need_is_the_file_and_each_contexts_kv_cache(tmp_path: Path) -> None:
    # Chat's KV cache counts twice (its idle caches' host copies hold up to n_ctx tokens),
    # once with deterministic: true (they stay in place); embeddings' once.
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 dimensions, for K and for V.
    shape = model_shape(embedded_model_path())
    assert (shape.architecture, shape.layers, shape.kv_per_token) == ("llama", 30, 30 * 3 * 128)
    settings = settings_from(tmp_path, "local:\n  - id: a\n    n_ctx: 1024\n"
                                       "  - id: b\n    n_ctx: 4096\n    embeddings: false\n"
                                       "  - id: c\n    n_ctx: 4096\n    embeddings: false\n"
                                       "    deterministic: true\n")
    a, b, c = local_needs(settings)
    size = embedded_model_path().stat().st_size
    assert (a.file_bytes, a.contexts, a.kv_bytes) == (size, 3, 3 * 1024 * 11520 * 2)
    assert (b.contexts, b.kv_bytes) == (2, 2 * 4096 * 11520 * 2)
    assert (c.contexts, c.kv_bytes) == (1, 4096 * 11520 * 2)
    check_memory([a, b], available=size + a.kv_bytes + b.kv_bytes)  # the file counts once
    with pytest.raises(ConfigFault) as fault:
        check_memory([a, b], available=100 * 2**20)
    message = str(fault.value)
    assert "\n" not in message
    assert message.startswith("the local models need about 341 MiB of memory, but 100 MiB is "
                              "available (MemAvailable): a 94 MiB file + 68 MiB KV cache "
                              "(3 x n_ctx 1024 x 11520 K/V values a token x 2 bytes); b ")
    assert message.endswith("or set memory_check: false to start anyway")


def test_an_encoder_needs_no_kv_cache_and_cannot_chat(tmp_path: Path) -> None:
    bert = tiny_bert(tmp_path / "bert.gguf")
    shape = model_shape(bert)
    assert (shape.architecture, shape.causal, shape.pooling, shape.trained_ctx) == (
        "bert", False, 2, 64)
    [need] = local_needs(settings_from(
        tmp_path, f"local:\n  id: e\n  gguf: {bert}\n  chat: false\n  n_ctx: 4096\n"))
    assert (need.kv_bytes, need.n_ctx, need.serves) == (0, 64, "embeddings (cls pooling)")
    with pytest.raises(ConfigFault) as fault:
        local_needs(settings_from(tmp_path, f"local:\n  id: e\n  gguf: {bert}\n"))
    assert str(fault.value).endswith(
        "kathan.yaml: local: bert.gguf is an embedding model (bert, its attention is not "
        "causal), which cannot chat: set chat: false")


async def test_kathan_models_shows_each_local_model(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, "local:\n  - id: a\n    n_ctx: 1024\n    embeddings: "
                                       "false\n  - id: b\n    chat: false\n    pooling: last\n")
    rows, text = await report(settings, with_probe=False)
    assert [(row.id, row.deployments[0].status) for row in rows] == [
        ("a", "file found (94 MiB), needs about 139 MiB: chat"),
        ("b", "file found (94 MiB), needs about 274 MiB: embeddings (last pooling)")]
    assert str(embedded_model_path()) in text
