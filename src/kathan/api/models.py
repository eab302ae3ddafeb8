"""``GET /v1/models``, ``GET /v1/models/{id}`` and the seeds' ``GET /v1/chat/models``."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from kathan.api import responses
from kathan.api.deps import RegistryDep, require_api_key
from kathan.protocol.models import ModelCard, ModelList
from kathan.routing.registry import ModelRegistry

router = APIRouter(dependencies=[Depends(require_api_key)], responses=responses.errors(401))


def _listing(registry: ModelRegistry) -> ModelList:
    return ModelList(
        data=[
            ModelCard(id=name, created=entry.created, owned_by=entry.owned_by)
            for name, entry in registry.names()
        ]
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(registry: RegistryDep) -> ModelList:
    return _listing(registry)


@router.get("/v1/chat/models", response_model=ModelList)
async def list_chat_models(registry: RegistryDep) -> ModelList:
    return _listing(registry)


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=responses.errors(404))
async def retrieve_model(model_id: str, registry: RegistryDep) -> ModelCard:
    entry = registry.resolve(model_id)
    return ModelCard(id=model_id, created=entry.created, owned_by=entry.owned_by)
