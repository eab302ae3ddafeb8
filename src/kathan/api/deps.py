"""Dependencies: reach the resources ``create_app`` put on ``app.state``, and check callers."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kathan.auth.authenticator import Authenticator
from kathan.auth.principal import Principal
from kathan.errors import AuthenticationError, PermissionDeniedError, ServiceUnavailableError
from kathan.routing.registry import ModelRegistry
from kathan.store.db import Database

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sk-...`")

Kind = Literal["static", "key", "session"]


async def registry(request: Request) -> ModelRegistry:
    reg: ModelRegistry = request.app.state.registry
    return reg


async def database(request: Request) -> Database:
    db: Database | None = request.app.state.db
    if db is None:
        raise ServiceUnavailableError(
            "Accounts are turned off on this server (accounts: false).", retry_after=3600,
            code="accounts_disabled",
        )
    return db


async def _principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None, kinds: tuple[Kind, ...]
) -> Principal:
    auth: Authenticator = request.app.state.auth
    principal = None
    if credentials is not None:
        principal = await auth.verify(credentials.credentials, allow=kinds)
    if principal is None:
        raise AuthenticationError()
    return principal


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """An API key (static or stored): for the model API."""
    return await _principal(request, credentials, ("static", "key"))


async def require_account(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """A stored API key or a login token of an account: for managing one's own keys."""
    principal = await _principal(request, credentials, ("static", "key", "session"))
    if principal.account_id is None:
        raise PermissionDeniedError(
            "This key belongs to no account; manage keys through /admin/keys.",
            code="no_account",
        )
    return principal


async def require_any(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Any valid token: an API key or a login token."""
    return await _principal(request, credentials, ("static", "key", "session"))


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    principal = await _principal(request, credentials, ("static", "key", "session"))
    if not principal.is_admin:
        raise PermissionDeniedError("This needs an admin key.", code="admin_required")
    return principal


RegistryDep = Annotated[ModelRegistry, Depends(registry)]
DatabaseDep = Annotated[Database, Depends(database)]
ApiKeyDep = Annotated[Principal, Depends(require_api_key)]
AccountDep = Annotated[Principal, Depends(require_account)]
AnyPrincipalDep = Annotated[Principal, Depends(require_any)]
AdminDep = Annotated[Principal, Depends(require_admin)]
