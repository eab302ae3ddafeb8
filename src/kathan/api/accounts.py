"""Self-service and admin APIs: register, log in, manage keys, read usage.

- ``POST /v1/auth/register``, ``POST /v1/auth/login`` (email and password).
- ``/v1/auth/session``: the web console's log-in, in an HttpOnly cookie with a CSRF
  token (``auth/browser.py``); ``GET /v1/auth/config``: whether sign-up is open.
- ``GET /v1/account``: the caller's account, limits and quota use.
- ``GET/POST /v1/keys``, ``DELETE /v1/keys/{id}``: an account holder's own keys,
  with a login token or one of the account's API keys.
- ``GET /v1/usage``: usage by day and model; the caller's account, or with an
  admin key everyone's.
- ``/admin/accounts`` and ``/admin/keys``: everything, with an admin key.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from kathan.api import responses
from kathan.api.body import JSONBodyRoute
from kathan.api.deps import AccountDep, AdminDep, AnyPrincipalDep, DatabaseDep, session_token
from kathan.auth import browser
from kathan.auth.authenticator import Authenticator
from kathan.auth.principal import Principal
from kathan.auth.throttle import LoginThrottle
from kathan.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from kathan.limits.base import Limits
from kathan.protocol import accounts as wire
from kathan.routing.registry import ModelRegistry
from kathan.service.metering import Metering, period_start
from kathan.settings import AccountDefaults, Settings
from kathan.store import models, repo
from kathan.store.db import Database
from kathan.store.repo import limits_of

# JSONBodyRoute: bodies are read as the chat route reads them (JSON whatever the content type).
router = APIRouter(route_class=JSONBodyRoute)
admin = APIRouter(prefix="/admin", route_class=JSONBodyRoute, responses=responses.errors(400, 401, 403, 422, 503))


def _account(a: models.Account) -> wire.Account:
    return wire.Account(
        id=a.id, name=a.name, email=a.email, is_admin=a.is_admin, disabled=a.disabled,
        created_at=_utc(a.created_at), limits=wire.LimitsModel.of(limits_of(a)),
    )


def _key(k: models.ApiKey, last_used: datetime | None = None) -> wire.ApiKey:
    return wire.ApiKey(
        id=k.id, name=k.name, prefix=k.prefix, account_id=k.account_id, models=k.models,
        limits=wire.LimitsModel.of(limits_of(k)), created_at=_utc(k.created_at),
        expires_at=_utc(k.expires_at), revoked_at=_utc(k.revoked_at),
        last_used_at=_utc(last_used),
    )


async def _keys(s: AsyncSession, account_id: str | None) -> wire.KeyList:
    """The keys (one account's, or all), each with when it was last used."""
    keys = await repo.list_keys(s, account_id=account_id)
    used = await repo.last_used(s, [k.id for k in keys])
    return wire.KeyList(data=[_key(k, used.get(k.id)) for k in keys])


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _future(expires_at: datetime | None) -> datetime | None:
    if expires_at is None:
        return None
    aware = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
    if aware <= datetime.now(UTC):
        raise InvalidRequestError("expires_at is in the past.", param="expires_at")
    return aware


def _served(request: Request, names: list[str] | None) -> list[str] | None:
    """``names`` when this server serves each of them (an id or an alias), else a 400
    naming the others and listing what it serves."""
    if names is None:
        return None
    registry: ModelRegistry = request.app.state.registry
    served = {name for name, _ in registry.names()}
    unknown = [n for n in dict.fromkeys(n.strip() for n in names) if n not in served]
    if unknown:
        listing = "; ".join(
            e.id + (f" (aliases {', '.join(e.aliases)})" if e.aliases else "")
            for e in registry.entries) or "none"
        raise InvalidRequestError(
            f"models: this server serves no model {', '.join(map(repr, unknown))}. "
            f"It serves: {listing}.", param="models", code="model_not_found")
    return names


def _forget(request: Request, key: models.ApiKey) -> None:
    auth: Authenticator = request.app.state.auth
    auth.forget(key.prefix)


async def _usage(
    db: Database, *, account_id: str | None, key_id: str | None, since: date | None,
    until: date | None, endpoint: str | None = None,
) -> wire.UsageReport:
    async with db.session() as s:
        rows = await repo.usage_summary(
            s, account_id=account_id, key_id=key_id,
            since=since.isoformat() if since else None,
            until=until.isoformat() if until else None, endpoint=endpoint)
    return wire.UsageReport(data=[
        wire.UsageBucket(
            day=r.day, model=r.model, endpoint=r.endpoint, requests=r.requests, succeeded=r.succeeded,
            failed=r.failed, cancelled=r.cancelled, rate_limited=r.rate_limited,
            prompt_tokens=r.prompt_tokens, cached_tokens=r.cached_tokens,
            completion_tokens=r.completion_tokens,
            total_tokens=r.prompt_tokens + r.completion_tokens,
        )
        for r in rows
    ])


# -- self-service -------------------------------------------------------------


@router.post("/v1/auth/register", status_code=201, response_model=wire.Account,
             responses=responses.errors(400, 403, 409, 422, 429, 503))
async def register(
    body: wire.RegisterRequest, db: DatabaseDep, request: Request
) -> wire.Account:
    """Create an account, when the operator opened registration (``registration: open``).
    It gets the configured ``default_account`` limits; one client address may register
    ``registrations_per_minute`` accounts."""
    settings: Settings = request.app.state.settings
    if settings.registration != "open":
        raise PermissionDeniedError(
            "Registration is closed on this server: an admin creates accounts "
            "(POST /admin/accounts).", code="registration_closed")
    metering: Metering | None = request.app.state.metering
    if metering is not None:  # the store is on whenever this route answers
        client = request.client.host if request.client is not None else "unknown"
        await metering.limiter.acquire(
            f"register:{client}", Limits(rpm=settings.registrations_per_minute))
    async with db.session() as s:
        account = await repo.create_account(
            s, name=body.name or body.email, email=body.email, password=body.password,
            limits=settings.default_account.limits.to_limits())
        await s.commit()
    return _account(account)


async def _log_in(
    body: wire.LoginRequest, db: Database, request: Request
) -> tuple[str, models.LoginSession, models.Account]:
    """Check the password and start a login session: its token, row and account. Failed
    logins are slowed down and then refused (``LoginThrottle``): a refused attempt is not
    even checked."""
    throttle: LoginThrottle = request.app.state.login_throttle
    settings: Settings = request.app.state.settings
    email = repo.normalize_email(body.email)
    client = request.client.host if request.client is not None else "unknown"
    throttle.check(email, client)
    async with db.session() as s:
        account = await repo.authenticate(s, body.email, body.password)
        if account is None:
            throttle.failed(email, client)
            await asyncio.sleep(throttle.slowdown(email, client))
            raise AuthenticationError("Wrong email or password.")
        throttle.succeeded(email)
        await repo.delete_expired_sessions(s)
        token, session = await repo.create_session(
            s, account.id, ttl_seconds=settings.session_seconds)
        await s.commit()
    return token, session, account


@router.post("/v1/auth/login", response_model=wire.LoginResponse,
             responses=responses.errors(400, 401, 422, 429, 503))
async def login(body: wire.LoginRequest, db: DatabaseDep, request: Request) -> wire.LoginResponse:
    """A login token (for managing one's own keys). Failed logins are throttled per email
    and per client address: slowed down, then refused with a 429."""
    token, session, account = await _log_in(body, db, request)
    return wire.LoginResponse(token=token, expires_at=_utc(session.expires_at),
                              account=_account(account))


@router.get("/v1/auth/config", response_model=wire.AuthConfig)
async def auth_config(request: Request) -> wire.AuthConfig:
    """What the console's log-in page needs to know before anyone logs in."""
    settings: Settings = request.app.state.settings
    return wire.AuthConfig(registration=settings.registration,
                           session_seconds=settings.session_seconds)


@router.post("/v1/auth/session", response_model=wire.BrowserSession,
             responses=responses.errors(400, 401, 403, 422, 429, 503))
async def open_browser_session(
    body: wire.LoginRequest, db: DatabaseDep, request: Request, response: Response
) -> wire.BrowserSession:
    """Log in for the console: the login token goes into the ``kathan_session`` cookie
    (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over https), never into the page, and
    the answer carries the session's CSRF token. Throttled as ``/v1/auth/login`` is."""
    origin = request.headers.get("origin")
    if origin is not None and origin != browser.own_origin(request):
        raise PermissionDeniedError(
            f"Cross-site log-in refused: it comes from {origin}.", code="csrf_failed")
    token, session, account = await _log_in(body, db, request)
    settings: Settings = request.app.state.settings
    response.set_cookie(
        browser.COOKIE, token, max_age=settings.session_seconds, path="/",
        httponly=True, samesite="strict", secure=browser.secure(request))
    response.headers["cache-control"] = "no-store"
    return wire.BrowserSession(account=_account(account), expires_at=_utc(session.expires_at),
                               csrf_token=browser.csrf_token(token))


@router.get("/v1/auth/session", response_model=wire.BrowserSession,
            responses=responses.errors(401, 503))
async def browser_session(
    principal: AnyPrincipalDep, db: DatabaseDep, request: Request, response: Response
) -> wire.BrowserSession:
    """The console's session, from its cookie: the account, when it ends, and the CSRF
    token (a page reloaded gets it here)."""
    token = request.cookies.get(browser.COOKIE)
    if principal.kind != "session" or token is None or "authorization" in request.headers:
        raise AuthenticationError("No console session: log in with POST /v1/auth/session.")
    assert principal.account_id is not None
    async with db.session() as s:
        account = await repo.get_account(s, principal.account_id)
    if account is None:
        raise AuthenticationError("The account no longer exists.")
    response.headers["cache-control"] = "no-store"
    assert principal.expires_at is not None
    return wire.BrowserSession(account=_account(account), expires_at=principal.expires_at,
                               csrf_token=browser.csrf_token(token))


@router.delete("/v1/auth/session", status_code=204, response_class=Response,
               responses=responses.errors(401, 403, 503))
async def close_browser_session(
    principal: AnyPrincipalDep, db: DatabaseDep, request: Request
) -> Response:
    """Log out of the console: the session ends on the server and the cookie is cleared."""
    return await _end_session(principal, db, request)


@router.post("/v1/auth/logout", status_code=204, response_class=Response,
             responses=responses.errors(400, 401, 403, 503))
async def logout(principal: AnyPrincipalDep, db: DatabaseDep, request: Request) -> Response:
    """End the login session whose token authorizes this request."""
    return await _end_session(principal, db, request)


async def _end_session(principal: Principal, db: Database, request: Request) -> Response:
    token = session_token(request)
    if principal.kind != "session" or token is None:
        # Authenticated, but not with what logout ends.
        raise PermissionDeniedError(
            "Logout ends a login session (a token from /v1/auth/login); an API key is "
            "revoked with DELETE /v1/keys/{key_id}.", code="not_a_session")
    prefix = repo.session_prefix(token)
    async with db.session() as s:
        await repo.end_session(s, prefix)
        await s.commit()
    auth: Authenticator = request.app.state.auth
    auth.forget(prefix)
    response = Response(status_code=204)
    if request.cookies.get(browser.COOKIE) == token:
        response.delete_cookie(browser.COOKIE, path="/", httponly=True, samesite="strict",
                               secure=browser.secure(request))
    return response


@router.get("/v1/keys", response_model=wire.KeyList, responses=responses.errors(401, 403, 503))
async def list_own_keys(principal: AccountDep, db: DatabaseDep) -> wire.KeyList:
    async with db.session() as s:
        return await _keys(s, principal.account_id)


@router.post("/v1/keys", status_code=201, response_model=wire.CreatedApiKey,
             responses=responses.errors(400, 401, 403, 422, 503))
async def create_own_key(
    body: wire.KeyCreateRequest, principal: AccountDep, db: DatabaseDep, request: Request
) -> wire.CreatedApiKey:
    assert principal.account_id is not None
    defaults: AccountDefaults = request.app.state.settings.default_account
    models = body.models if body.models is not None else defaults.models
    if defaults.models is not None and not set(models or ()) <= set(defaults.models):
        outside = sorted(set(models or ()) - set(defaults.models))
        raise PermissionDeniedError(
            f"Keys of this account may use only {', '.join(defaults.models)}; "
            f"not {', '.join(outside)}.", param="models", code="model_not_allowed")
    _served(request, body.models)
    async with db.session() as s:
        account = await repo.get_account(s, principal.account_id)
        if account is None:
            raise NotFoundError("The account no longer exists.")
        held = sum(1 for k in await repo.list_keys(s, account_id=account.id,
                                                   include_revoked=False))
        if held >= defaults.max_keys:
            raise PermissionDeniedError(
                f"This account holds {held} keys, the most it may create itself "
                f"({defaults.max_keys}); revoke one first.", code="too_many_keys")
        token, key = await repo.create_key(
            s, account_id=account.id, name=body.name, models=models,
            limits=limits_of(account), expires_at=_future(body.expires_at))
        await s.commit()
    return wire.CreatedApiKey(**_key(key).model_dump(), key=token)


@router.delete("/v1/keys/{key_id}", response_model=wire.ApiKey,
               responses=responses.errors(401, 403, 404, 503))
async def revoke_own_key(
    key_id: str, principal: AccountDep, db: DatabaseDep, request: Request
) -> wire.ApiKey:
    async with db.session() as s:
        key = await repo.revoke_key(s, key_id, account_id=principal.account_id)
        if key is None:
            raise NotFoundError(f"No key '{key_id}' in this account.", param="key_id")
        await s.commit()
    _forget(request, key)
    return _key(key)


@router.get("/v1/account", response_model=wire.AccountOverview,
            responses=responses.errors(401, 403, 503))
async def account_overview(principal: AccountDep, db: DatabaseDep) -> wire.AccountOverview:
    """The caller's account with its limits, and how much of each token quota is used in
    its current period: one per active key with a quota, and the console playground's
    (``key_id`` null), which runs under the account's own limits."""
    assert principal.account_id is not None
    now = time.time()
    async with db.session() as s:
        account = await repo.get_account(s, principal.account_id)
        if account is None:
            raise NotFoundError("The account no longer exists.")
        holders: list[tuple[str | None, str, Limits, str]] = [
            (k.id, k.name, limits_of(k), k.id)
            for k in await repo.list_keys(s, account_id=account.id, include_revoked=False)]
        holders.append((None, "Console playground", limits_of(account),
                        repo.console_limit_id(account.id)))
        quotas = []
        for key_id, name, limits, limit_id in holders:
            if limits.quota_tokens is None or limits.quota_period is None:
                continue
            start = period_start(limits.quota_period, now)
            quotas.append(wire.Quota(
                key_id=key_id, name=name, quota_tokens=limits.quota_tokens,
                quota_period=limits.quota_period, period_start=start,
                used_tokens=await repo.tokens_since(s, limit_id, start)))
    return wire.AccountOverview(account=_account(account), quotas=quotas)


@router.get("/v1/usage", response_model=wire.UsageReport,
            responses=responses.errors(400, 401, 422, 503))
async def usage(
    principal: AnyPrincipalDep,
    db: DatabaseDep,
    since: Annotated[wire.Day | None, Query(description="First UTC day, YYYY-MM-DD.")] = None,
    until: Annotated[wire.Day | None, Query(description="Last UTC day, YYYY-MM-DD.")] = None,
    account_id: Annotated[str | None, Query(max_length=40, description="Admins only.")] = None,
    key_id: Annotated[str | None, Query(
        max_length=40, description="One key's requests; `console`: the console "
        "playground's.")] = None,
    endpoint: Annotated[wire.Endpoint | None, Query(
        description="One endpoint's requests.")] = None,
) -> wire.UsageReport:
    """The caller's account's usage by day, model and endpoint; an admin sees everyone's."""
    if not principal.is_admin:
        account_id = principal.account_id
        if account_id is None:  # pragma: no cover - non-admin principals have accounts
            raise AuthenticationError()
    return await _usage(db, account_id=account_id, key_id=key_id, since=since, until=until,
                        endpoint=endpoint)


# -- admin --------------------------------------------------------------------


@admin.get("/accounts", response_model=wire.AccountList)
async def admin_list_accounts(_: AdminDep, db: DatabaseDep) -> wire.AccountList:
    async with db.session() as s:
        return wire.AccountList(data=[_account(a) for a in await repo.list_accounts(s)])


@admin.post("/accounts", status_code=201, response_model=wire.Account,
            responses=responses.errors(409))
async def admin_create_account(
    body: wire.AccountCreateRequest, _: AdminDep, db: DatabaseDep
) -> wire.Account:
    async with db.session() as s:
        account = await repo.create_account(
            s, name=body.name, email=body.email, password=body.password,
            is_admin=body.is_admin, limits=body.limits.to_limits() if body.limits else None)
        await s.commit()
    return _account(account)


@admin.get("/accounts/{account_id}", response_model=wire.Account,
           responses=responses.errors(404))
async def admin_get_account(account_id: str, _: AdminDep, db: DatabaseDep) -> wire.Account:
    async with db.session() as s:
        account = await repo.get_account(s, account_id)
    if account is None:
        raise NotFoundError(f"No account '{account_id}'.", param="account_id")
    return _account(account)


@admin.patch("/accounts/{account_id}", response_model=wire.Account,
             responses=responses.errors(404))
async def admin_update_account(
    account_id: str, body: wire.AccountUpdateRequest, _: AdminDep, db: DatabaseDep,
    request: Request,
) -> wire.Account:
    changes: dict[str, Any] = {}
    if "name" in body.model_fields_set and body.name is not None:
        changes["name"] = body.name
    if "disabled" in body.model_fields_set and body.disabled is not None:
        changes["disabled"] = body.disabled
    if "limits" in body.model_fields_set:
        changes["limits"] = body.limits.to_limits() if body.limits else None
    async with db.session() as s:
        account = await repo.update_account(s, account_id, **changes)
        if account is None:
            raise NotFoundError(f"No account '{account_id}'.", param="account_id")
        keys = await repo.list_keys(s, account_id=account_id)
        await s.commit()
    for key in keys:  # a disabled account's keys stop working here at once
        _forget(request, key)
    return _account(account)


@admin.get("/keys", response_model=wire.KeyList)
async def admin_list_keys(
    _: AdminDep, db: DatabaseDep,
    account_id: Annotated[str | None, Query(max_length=40)] = None,
) -> wire.KeyList:
    async with db.session() as s:
        return await _keys(s, account_id)


@admin.post("/keys", status_code=201, response_model=wire.CreatedApiKey,
            responses=responses.errors(400, 404))
async def admin_create_key(
    body: wire.AdminKeyCreateRequest, _: AdminDep, db: DatabaseDep, request: Request
) -> wire.CreatedApiKey:
    _served(request, body.models)
    async with db.session() as s:
        account = await repo.get_account(s, body.account_id)
        if account is None:
            raise NotFoundError(f"No account '{body.account_id}'.", param="account_id")
        limits = body.limits.to_limits() if body.limits is not None else limits_of(account)
        token, key = await repo.create_key(
            s, account_id=account.id, name=body.name, models=body.models, limits=limits,
            expires_at=_future(body.expires_at))
        await s.commit()
    return wire.CreatedApiKey(**_key(key).model_dump(), key=token)


@admin.patch("/keys/{key_id}", response_model=wire.ApiKey,
             responses=responses.errors(400, 404, 409))
async def admin_update_key(
    key_id: str, body: wire.KeyUpdateRequest, _: AdminDep, db: DatabaseDep, request: Request
) -> wire.ApiKey:
    changes: dict[str, Any] = {}
    fields = body.model_fields_set
    if "name" in fields and body.name is not None:
        changes["name"] = body.name
    if "models" in fields:
        changes["models"] = _served(request, body.models)
    if "limits" in fields:
        changes["limits"] = body.limits.to_limits() if body.limits else None
    if "expires_at" in fields:
        changes["expires_at"] = _future(body.expires_at)
    async with db.session() as s:
        key = await repo.update_key(s, key_id, **changes)
        if key is None:
            raise NotFoundError(f"No key '{key_id}'.", param="key_id")
        await s.commit()
    _forget(request, key)
    return _key(key)


@admin.delete("/keys/{key_id}", response_model=wire.ApiKey, responses=responses.errors(404))
async def admin_revoke_key(
    key_id: str, _: AdminDep, db: DatabaseDep, request: Request
) -> wire.ApiKey:
    async with db.session() as s:
        key = await repo.revoke_key(s, key_id)
        if key is None:
            raise NotFoundError(f"No key '{key_id}'.", param="key_id")
        await s.commit()
    _forget(request, key)
    return _key(key)


@admin.get("/usage", response_model=wire.UsageReport)
async def admin_usage(
    _: AdminDep, db: DatabaseDep,
    since: Annotated[wire.Day | None, Query(description="First UTC day, YYYY-MM-DD.")] = None,
    until: Annotated[wire.Day | None, Query(description="Last UTC day, YYYY-MM-DD.")] = None,
    account_id: Annotated[str | None, Query(max_length=40)] = None,
    key_id: Annotated[str | None, Query(max_length=40)] = None,
    endpoint: Annotated[wire.Endpoint | None, Query()] = None,
) -> wire.UsageReport:
    return await _usage(db, account_id=account_id, key_id=key_id, since=since, until=until,
                        endpoint=endpoint)

