"""Dependencies: reach the resources ``create_app`` put on ``app.state``, and check callers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, Protocol, TypeVar, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from kathan.api.body import load
from kathan.api.errors import issue
from kathan.api.explain import explain
from kathan.auth import browser
from kathan.auth.authenticator import Authenticator
from kathan.auth.principal import Principal
from kathan.errors import (
    AuthenticationError,
    KathanError,
    PermissionDeniedError,
    RequestValidationFailed,
    ServiceUnavailableError,
)
from kathan.routing.registry import ModelRegistry
from kathan.service.metering import Meter, Metering
from kathan.store.db import Database

M = TypeVar("M", bound=BaseModel)

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
    elif (api_key_header := request.headers.get("x-api-key")) is not None:
        # Anthropic's way of sending a key (its SDK's), accepted on every route.
        principal = await auth.verify(api_key_header, allow=kinds)
    else:
        # The console's session cookie (auth/browser.py): a login session on every route,
        # the model routes included (the playground), with CSRF checked on writes.
        token = request.cookies.get(browser.COOKIE)
        if token is not None:
            principal = await auth.verify(token, allow=("session",))
            if principal is not None:
                browser.check(request, request.method, token)
    if principal is None:
        raise AuthenticationError()
    return principal


def session_token(request: Request) -> str | None:
    """The login token that authorized ``request``: a bearer token or the console's cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    return request.cookies.get(browser.COOKIE)


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """An API key (static or stored): for the model API; or the console's session cookie."""
    return await _principal(request, credentials, ("static", "key"))


async def api_key(request: Request) -> Principal:
    """``require_api_key`` for the generation routes, which read their own request:
    the same bearer scheme object and the same check, called directly. FastAPI's
    dependency solving costs these hot routes more than all of their own work
    (``bench/asgi_overhead.py``)."""
    return await _principal(request, await _bearer(request), ("static", "key"))


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


async def read_json(request: Request, model: type[M], principal: Principal) -> M:
    """The body read as JSON whatever its content type (``curl -d`` sends a form type),
    checked by ``body.load`` as every route's is, and validated straight from its
    bytes as ``model``. Its 422 carries the seeds' ``detail`` items located in the
    body and a message from ``explain``; the caller (known: the key is checked first,
    so a 401 comes before a 422) gets the rejected request's ledger row. The route
    (a ``GenerationRoute``) describes the body for OpenAPI from ``model``."""
    raw = await request.body()
    try:
        value = load(raw)
        return model.model_validate_json(raw)
    except RequestValidationFailed as error:
        await _record_rejected(request, principal, None, error)
        raise
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        message, param = explain(errors, value)
        failed = RequestValidationFailed([issue(e) for e in errors], message=message,
                                         param=param)
        await _record_rejected(request, principal, value, failed)
        raise failed from None


class _Dialect(Protocol):
    model: str
    stream: bool | None


D = TypeVar("D", bound=BaseModel)
T = TypeVar("T")


async def admitted(
    request: Request, model: type[D]
) -> tuple[Principal, D, Meter | None]:
    """A request in another dialect than chat's: the key checked, the body read as
    ``model`` and its meter begun (with accounts)."""
    principal = await api_key(request)
    body = await read_json(request, model, principal)
    metering: Metering | None = request.app.state.metering
    dialect = cast(_Dialect, body)
    meter = metering.begin(principal, streamed=bool(dialect.stream),
                           endpoint=endpoint_of(request)) if metering else None
    return principal, body, meter


async def refused(meter: Meter | None, model: str, error: KathanError) -> None:
    """A request refused before it reached the model: its ledger row."""
    if meter is not None:
        meter.model = model
        await meter.fail(error)


async def translated(
    request: Request, model: type[D], translate: Callable[[D], T]
) -> tuple[D, T, Meter | None]:
    """A request in another dialect than chat's (Messages, legacy completions),
    ``admitted`` and translated for the chat path. A translation refused (a
    ``KathanError``) is the request's ledger row before it is raised."""
    _, body, meter = await admitted(request, model)
    try:
        return body, translate(body), meter
    except KathanError as error:
        await refused(meter, cast(_Dialect, body).model, error)
        raise


def endpoint_of(request: Request) -> str:
    """The API a request came through, as its ledger row names it: the path after /v1/
    (``chat/completions``, ``responses``, ``messages``, ``completions``, ``embeddings``)."""
    return request.url.path.removeprefix("/v1/")[:32]


async def _record_rejected(
    request: Request, principal: Principal, body: Any, error: KathanError
) -> None:
    """A request from a known caller that failed validation still gets its ledger row
    (``body``: the parsed JSON, None when it was not acceptable JSON)."""
    metering: Metering | None = request.app.state.metering
    if metering is None:
        return
    body = body if isinstance(body, dict) else {}
    meter = metering.begin(principal, streamed=body.get("stream") is True,
                           endpoint=endpoint_of(request))
    model = body.get("model")
    meter.model = model if isinstance(model, str) else ""
    await meter.fail(error)
