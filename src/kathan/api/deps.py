"""Dependencies: reach the resources ``create_app`` put on ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kathan.auth.keys import KeyVerifier
from kathan.errors import AuthenticationError
from kathan.routing.registry import ModelRegistry
from kathan.service.chat import ChatService

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sk-...`")


async def chat_service(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat
    return service


async def registry(request: Request) -> ModelRegistry:
    reg: ModelRegistry = request.app.state.registry
    return reg


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    verifier: KeyVerifier = request.app.state.keys
    if credentials is None or not await verifier.verify(credentials.credentials):
        raise AuthenticationError()


ChatServiceDep = Annotated[ChatService, Depends(chat_service)]
RegistryDep = Annotated[ModelRegistry, Depends(registry)]
