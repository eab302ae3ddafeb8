"""``GET /v1/models``, ``GET /v1/models/{id}`` and the seeds' ``GET /v1/chat/models``."""

from __future__ import annotations

from fastapi import APIRouter

from kathan.api import responses
from kathan.api.deps import ApiKeyDep, RegistryDep
from kathan.auth.principal import Principal
from kathan.protocol.models import ModelCard, ModelList
from kathan.routing.registry import ModelRegistry

router = APIRouter(responses=responses.errors(401, 503))


def _listing(registry: ModelRegistry, principal: Principal) -> ModelList:
    """The models the caller's key may use (all of them for most keys)."""
    return ModelList(
        data=[
            ModelCard(id=name, created=entry.created, owned_by=entry.owned_by)
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
    return ModelCard(id=model_id, created=entry.created, owned_by=entry.owned_by)
