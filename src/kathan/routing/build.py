"""The model registry built from settings: the embedded model and the configured ones."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from kathan.backends.base import Backend
from kathan.backends.http1 import HTTPPool
from kathan.backends.upstream import Deployment
from kathan.routing.breaker import CircuitBreaker
from kathan.routing.capabilities import Capabilities
from kathan.routing.embeddings import RoutedEmbeddings
from kathan.routing.picker import Route
from kathan.routing.registry import Ceilings, ModelEntry, ModelRegistry
from kathan.routing.retry import RetryPolicy
from kathan.routing.router import Router
from kathan.settings import (
    VOICE_MAX_TOKENS,
    DeploymentSettings,
    LocalModelSettings,
    ModelSettings,
    RequestLimits,
    Settings,
)

if TYPE_CHECKING:
    from kathan.backends.embeddings import EmbeddingBackend, EmbeddingModel


logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """The models in the configuration cannot be served as written."""


@dataclass(frozen=True, slots=True)
class LocalModel:
    """A local model as the registry serves it: its settings, the backend answering its
    chats (its engine's ``LocalBackend``; for a model with ``chat: false`` only asked
    whether it has loaded), the model its embeddings come from (None: it embeds
    nothing), and when its file was made (the listing's ``created``)."""

    settings: LocalModelSettings
    backend: Backend
    embeddings: EmbeddingModel | None = None
    created: int = 0


def served_models(settings: Settings) -> tuple[list[ModelSettings], list[str]]:
    """The configured models that are served, and one line for each deployment (or
    whole model) left out because it opted in with ``if_key_set`` and its key
    variable is unset. A model keeps its deployments' config indices (``id#i``).
    A deployment without the opt-in is never left out: its missing key stops the
    start-up (``build_registry``)."""
    served: list[ModelSettings] = []
    notes: list[str] = []
    for model in settings.models:
        missing = [(i, d) for i, d in enumerate(model.deployments) if d.left_out()]
        if len(missing) == len(model.deployments):
            names = " and ".join(dict.fromkeys(str(d.api_key_env) for _, d in missing))
            notes.append(f"model {model.id} is not served: {names} not set")
            continue
        notes += [f"model {model.id}: deployment {model.id}#{i} ({d.base_url}) left out: "
                  f"{d.api_key_env} not set" for i, d in missing]
        served.append(model)
    return served, notes


def _deployment(
    model: ModelSettings, i: int, d: DeploymentSettings, limits: RequestLimits
) -> Deployment:
    name = f"{model.id}#{i}"
    try:
        key = d.api_key()
    except ValueError as exc:
        raise ConfigError(f"deployment {name}: {exc}") from exc
    return Deployment(
        backend=d.backend, model=d.model or model.id, base_url=d.base_url.rstrip("/"),
        api_key=key, weight=d.weight, max_in_flight=d.max_in_flight,
        connect_timeout=d.connect_timeout, read_timeout=d.read_timeout,
        headers=dict(d.headers), name=name, default_max_tokens=limits.default_max_tokens,
    )


def _ceilings(limits: RequestLimits) -> Ceilings:
    return Ceilings(max_tokens=limits.max_tokens, max_n=limits.max_n)


def _local_model(d: DeploymentSettings, name: str, local: Sequence[LocalModel]) -> LocalModel:
    """The local model a ``backend: local`` deployment routes to: the one its ``model``
    names (an id or alias), or the only one."""
    if not local:
        raise ConfigError(f"deployment {name}: backend local, but the local model is off")
    ids = ", ".join(m.settings.id for m in local)
    if d.model is None:
        if len(local) > 1:
            raise ConfigError(f"deployment {name}: backend local needs model: which local "
                              f"model it routes to ({ids})")
        found = local[0]
    else:
        named = [m for m in local if d.model in (m.settings.id, *m.settings.aliases)]
        if not named:
            raise ConfigError(f"deployment {name}: model {d.model!r} is not a local model "
                              f"(local models: {ids})")
        found = named[0]
    if not found.settings.chat:
        raise ConfigError(f"deployment {name}: local model {found.settings.id} is an "
                          "embedding model (chat: false), which cannot answer chats")
    return found


def _backend(
    d: Deployment, session: aiohttp.ClientSession, pool: HTTPPool, local: LocalModel | None
) -> Backend:
    if d.backend == "local":
        assert local is not None
        return local.backend
    if d.backend == "openai":
        from kathan.backends.openai import OpenAIBackend

        return OpenAIBackend(d, session, pool)
    if d.backend == "anthropic":
        from kathan.backends.anthropic import AnthropicBackend

        return AnthropicBackend(d, session, pool)
    from kathan.backends.gemini import GeminiBackend

    return GeminiBackend(d, session, pool)


def _embeddings(
    d: Deployment, pool: HTTPPool, local: EmbeddingBackend | None
) -> EmbeddingBackend | None:
    """The deployment's embeddings: its provider's API (openai, gemini), the local
    model's, or None (anthropic has no embeddings API)."""
    if d.backend == "openai":
        from kathan.backends.upstream_embeddings import OpenAIEmbeddings

        return OpenAIEmbeddings(d, pool)
    if d.backend == "gemini":
        from kathan.backends.upstream_embeddings import GeminiEmbeddings

        return GeminiEmbeddings(d, pool)
    return local if d.backend == "local" else None


def _names_once(local: Sequence[LocalModel], served: Sequence[ModelSettings]) -> None:
    """A ``ConfigError`` naming both models when an id or alias names two of them."""
    seen: dict[str, str] = {}
    named = [(f"local model {m.settings.id}", m.settings.id, m.settings.aliases)
             for m in local] + [(f"model {m.id}", m.id, m.aliases) for m in served]
    for what, model_id, aliases in named:
        for name in (model_id, *aliases):
            kind = "id" if name == model_id else "alias"
            here = f"{what} ({kind})"
            if name in seen:
                raise ConfigError(f"model name {name!r} is configured twice: {seen[name]} "
                                  f"and {here}; each id and alias names one model")
            seen[name] = here


def build_registry(
    settings: Settings,
    *,
    local: Sequence[LocalModel] = (),
    session: aiohttp.ClientSession,
    pool: HTTPPool | None = None,
) -> tuple[ModelRegistry, list[Router]]:
    """Every model clients may name, and the routers whose health must be probed.

    ``local`` are the local models, in the config's order. One serves embeddings when
    its ``embeddings`` is given, and chats unless its settings say ``chat: false``
    (its entry's backend then refuses every chat dialect with a 400). A configured
    model serves embeddings on its openai and gemini deployments (and local ones, with
    the local model's embeddings) unless its ``capabilities`` leave ``embeddings`` out.

    Provider backends send through ``pool`` (a new one when none is given); ``session``
    carries their health probes and fetches the image URLs the Gemini backend must inline.
    """
    if pool is None:
        pool = HTTPPool()
    served, notes = served_models(settings)
    for note in notes:
        logger.info("%s", note)
    _names_once(local, served)
    served_ids = {model.id for model in served}
    served_names = {name for model in served for name in (model.id, *model.aliases)}
    served_names |= {name for m in local for name in (m.settings.id, *m.settings.aliases)}
    # The names of models left out for want of a key: a fallback or voice_model naming
    # one is dropped rather than refused, since the model exists once its key is set.
    left_out = {name for model in settings.models if model.id not in served_ids
                for name in (model.id, *model.aliases)} - served_names

    def _voice_model(model_id: str, voice_model: str | None) -> str | None:
        if voice_model in left_out:
            logger.info("model %s: voice_model %s is not served, so finetune requests get "
                        "%s with the voice layer", model_id, voice_model, model_id)
            return None
        return voice_model

    entries: list[ModelEntry] = []
    local_embedders: dict[str, EmbeddingBackend] = {}
    for m in local:
        config = m.settings
        if m.embeddings is not None:
            from kathan.backends.embeddings import TokenEmbeddings

            local_embedders[config.id] = TokenEmbeddings(m.embeddings)
        backend = m.backend
        if not config.chat:
            from kathan.backends.embeddings import EmbeddingOnly

            backend = EmbeddingOnly(config.id, m.backend)
        local_limits = config.limits(settings.requests)
        entries.append(ModelEntry(
            id=config.id, owned_by=config.owned_by, created=m.created,
            backend=backend, aliases=tuple(config.aliases),
            voice_model=_voice_model(config.id, config.voice_model) if config.chat else None,
            ceilings=_ceilings(local_limits), voice_max_tokens=_voice_max_tokens(local_limits),
            embeddings=local_embedders.get(config.id), chat=config.chat,
        ))
    routers: list[Router] = []
    registry_box: list[ModelRegistry] = []

    def resolve(name: str) -> Backend:
        return registry_box[0].resolve(name).backend

    created = int(time.time())
    policy = settings.routing
    retry = RetryPolicy(retries=policy.retries, backoff=policy.backoff_seconds)
    for model in served:
        limits = model.requests.under(settings.requests)
        routes = []
        embedders: dict[Route, EmbeddingBackend] = {}
        caps = model.capabilities
        for i, d in enumerate(model.deployments):
            if d.left_out():
                continue
            deployment = _deployment(model, i, d, limits)
            serving = _local_model(d, deployment.name, local) if d.backend == "local" else None
            breaker = CircuitBreaker(policy.breaker_failures, policy.breaker_cooldown)
            route = Route(deployment, _backend(deployment, session, pool, serving), breaker)
            routes.append(route)
            embedder = _embeddings(deployment, pool, None if serving is None else
                                   local_embedders.get(serving.settings.id))
            if embedder is not None and (caps is None or "embeddings" in caps):
                embedders[route] = embedder
        capabilities = Capabilities() if caps is None else Capabilities(
            tools="tools" in caps, vision="vision" in caps,
            json_schema="json_schema" in caps, reasoning="reasoning" in caps,
        )
        router = Router(model.id, routes, retry, capabilities=capabilities,
                        fallbacks=tuple(f for f in model.fallbacks if f not in left_out),
                        resolve=resolve, deadline=settings.routing.deadline_seconds,
                        queue_seconds=settings.routing.queue_seconds)
        routers.append(router)
        entries.append(ModelEntry(
            id=model.id, owned_by=model.owned_by, created=created, backend=router,
            aliases=tuple(model.aliases), voice_model=_voice_model(model.id, model.voice_model),
            ceilings=_ceilings(limits), voice_max_tokens=_voice_max_tokens(limits),
            embeddings=RoutedEmbeddings(router, embedders) if embedders else None))
    try:
        registry = ModelRegistry(entries)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    known = {name for name, _ in registry.names()}
    for model in settings.models:
        for fallback in model.fallbacks:
            if fallback not in known and fallback not in left_out:
                raise ConfigError(f"model {model.id}: fallback {fallback!r} is not a model")
            if fallback in known and not registry.resolve(fallback).chat:
                raise ConfigError(f"model {model.id}: fallback {fallback!r} is an embedding "
                                  "model (chat: false)")
    _refuse_fallback_cycles(served, registry, left_out)
    for entry in registry.entries:
        if entry.voice_model is None:
            continue
        if entry.voice_model not in known:
            raise ConfigError(f"model {entry.id}: voice_model {entry.voice_model!r} is not a model")
        voice = registry.resolve(entry.voice_model)
        if voice.id == entry.id:
            raise ConfigError(f"model {entry.id}: voice_model names the model itself")
        if not voice.chat:
            raise ConfigError(f"model {entry.id}: voice_model {entry.voice_model!r} is an "
                              "embedding model (chat: false)")
    registry_box.append(registry)
    return registry, routers


def _voice_max_tokens(limits: RequestLimits) -> int:
    return limits.voice_max_tokens if limits.voice_max_tokens is not None else VOICE_MAX_TOKENS


def _refuse_fallback_cycles(
    models: list[ModelSettings], registry: ModelRegistry, left_out: set[str]
) -> None:
    """A model must not fall back, directly or not, to itself (requests would loop)."""
    edges = {m.id: [registry.resolve(f).id for f in m.fallbacks if f not in left_out]
             for m in models}

    def visit(model: str, path: tuple[str, ...]) -> None:
        for nxt in edges.get(model, ()):
            if nxt in path:
                raise ConfigError("fallbacks loop: " + " -> ".join((*path, nxt)))
            visit(nxt, (*path, nxt))

    for model in edges:
        visit(model, (model,))
