"""``GET /v1/models``, ``GET /v1/models/{id}`` and the seeds' ``GET /v1/chat/models``;
``GET /v1/catalog`` (each model's aliases, backend, capabilities and deployments' health,
for the console's models page) and ``GET /v1/voices`` (the voices voice mode speaks)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from kathan.api import responses
from kathan.api.deps import ApiKeyDep, RegistryDep
from kathan.auth.principal import Principal
from kathan.backends.base import serves_raw_prompts
from kathan.protocol.models import ModelCard, ModelList
from kathan.routing.registry import ModelEntry, ModelRegistry
from kathan.routing.router import Router
from kathan.voice import profile

router = APIRouter(responses=responses.errors(401, 503))


def _listing(registry: ModelRegistry, principal: Principal) -> ModelList:
    """The models the caller's key may use (all of them for most keys)."""
    return ModelList(
        data=[
            ModelCard(id=name, created=entry.created, owned_by=entry.owned_by,
                      endpoints=endpoints(entry))
            for name, entry in registry.names()
            if principal.may_use(entry.id, entry.aliases)
        ]
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(registry: RegistryDep, principal: ApiKeyDep) -> ModelList:
    return _listing(registry, principal)


@router.get("/v1/chat/models", response_model=ModelList)
async def list_chat_models(registry: RegistryDep, principal: ApiKeyDep) -> ModelList:
    return _listing(registry, principal)


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=responses.errors(404))
async def retrieve_model(model_id: str, registry: RegistryDep, principal: ApiKeyDep) -> ModelCard:
    entry = registry.resolve(model_id, principal.may_use)
    if not principal.may_use(entry.id, entry.aliases):
        # As if absent, like the hosted providers.
        raise registry.missing(model_id, principal.may_use)
    return ModelCard(id=model_id, created=entry.created, owned_by=entry.owned_by,
                     endpoints=endpoints(entry))


def endpoints(entry: ModelEntry) -> list[str]:
    """The APIs that serve ``entry``: every model but an embedding model chats (chat
    completions, Responses and Messages are one path); legacy completions where its
    backend continues raw prompts, embeddings where it has an embedding backend."""
    served = []
    if entry.chat:
        served = ["chat/completions", "responses", "messages"]
        if serves_raw_prompts(entry.backend):
            served.append("completions")
    if entry.embeddings is not None:
        served.append("embeddings")
    return served


class DeploymentStatus(BaseModel):
    name: str
    provider: str
    model: str
    healthy: bool
    circuit: Literal["closed", "open", "half-open"]


class CatalogEntry(BaseModel):
    id: str
    object: Literal["model"] = "model"
    aliases: list[str]
    owned_by: str
    created: int
    backend: str
    ready: bool
    capabilities: list[str]
    deployments: list[DeploymentStatus]


class Catalog(BaseModel):
    object: Literal["list"] = "list"
    data: list[CatalogEntry]


def _catalog_entry(entry: ModelEntry) -> CatalogEntry:
    backend = entry.backend
    if isinstance(backend, Router):
        caps = backend.capabilities
        now = backend.clock()
        deployments = [
            DeploymentStatus(
                name=r.deployment.name, provider=r.deployment.backend, model=r.deployment.model,
                healthy=r.breaker.allows(now) and r.backend.ready,
                circuit=r.breaker.state(now).value)
            for r in backend.routes]
        kinds = sorted({r.deployment.backend for r in backend.routes})
        kind = kinds[0] if len(kinds) == 1 else "mixed"
        extra = [name for name in ("tools", "vision", "json_schema", "reasoning")
                 if getattr(caps, name)]
    else:  # the embedded engine
        deployments, kind = [], "local"
        extra = ["tools", "json_schema"]
    chat = ["chat", "streaming", *extra, "voice"] if entry.chat else []
    return CatalogEntry(
        id=entry.id, aliases=list(entry.aliases), owned_by=entry.owned_by, created=entry.created,
        backend=kind, ready=backend.ready, deployments=deployments,
        capabilities=[*chat, *(["embeddings"] if entry.embeddings is not None else [])])


@router.get("/v1/catalog", response_model=Catalog)
async def catalog(registry: RegistryDep, principal: ApiKeyDep) -> Catalog:
    """The models the caller may use, with what the console's models page shows: aliases,
    backend, capabilities, readiness and, for upstream models, each deployment's health
    (its circuit breaker's state)."""
    return Catalog(data=[_catalog_entry(e) for e in registry.entries
                         if principal.may_use(e.id, e.aliases)])


class Accent(BaseModel):
    name: str
    locale: str


class Language(BaseModel):
    code: str
    name: str
    accents: list[Accent]


class Voices(BaseModel):
    genders: list[str]
    languages: list[Language]


@router.get("/v1/voices", response_model=Voices)
async def voices(principal: ApiKeyDep) -> Voices:
    """What voice mode's ``language``, ``accent`` and ``gender`` accept; each language's
    first accent is its default."""
    return Voices(genders=list(profile.genders()), languages=[
        Language(code=code, name=name, accents=[Accent(name=a, locale=loc)
                                                for a, loc in accents.items()])
        for code, name, accents in profile.catalog()])
