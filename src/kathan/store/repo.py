"""The store's queries: accounts, API keys, login sessions and usage rows.

Every function takes an ``AsyncSession`` and leaves committing to the caller,
except ``bootstrap_admin``. Tokens are returned once, when made, and never
stored: a row keeps the token's public prefix (for lookup and display) and its
SHA-256 digest. No token ever appears in a log line or an exception message.

A key made with ``create_key`` is found again by ``key_by_prefix(session,
key_prefix(token))``, which returns the key and its account; the caller then
checks the token with ``token_matches(token, key.digest)``.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final, cast

from sqlalchemy import ColumnElement, Connection, case, delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kathan.errors import ConflictError, InvalidRequestError, NotFoundError
from kathan.limits.base import Limits, QuotaPeriod
from kathan.store.db import dialect_of, serialize_setup
from kathan.store.models import (
    Account,
    ApiKey,
    Base,
    LimitColumns,
    LoginSession,
    StoredResponse,
    UsageRecord,
)
from kathan.store.passwords import burn_verify_time, hash_password, needs_rehash, verify_password

KEY_START = "sk-kathan-"
SESSION_START = "ks-"
KEY_PREFIX_LEN: Final = len(KEY_START) + 8  # 18: "sk-kathan-" and the 8-character public id
SESSION_PREFIX_LEN: Final = len(SESSION_START) + 8  # 11
_PUBLIC_ID_CHARS = string.ascii_lowercase + string.digits
_KEY_SHAPE = re.compile(r"sk-kathan-[a-z0-9]{8}[A-Za-z0-9_-]{40}")
_SESSION_SHAPE = re.compile(r"ks-[a-z0-9]{8}[A-Za-z0-9_-]{40}")
_INSERT_BATCH = 500  # rows per INSERT: 17 columns each stays under every driver's bind limit


class Unset(enum.Enum):
    """The type of ``UNSET``: an argument left out, as opposed to None (clear it)."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET


# Tokens and ids


def _new_token(start: str) -> str:
    public = "".join(secrets.choice(_PUBLIC_ID_CHARS) for _ in range(8))
    return start + public + secrets.token_urlsafe(30)  # 30 bytes: 40 characters


def new_key_token() -> str:
    """A new API key: ``sk-kathan-`` + 8 lowercase letters/digits + 40 URL-safe characters."""
    return _new_token(KEY_START)


def new_session_token() -> str:
    """A new login session token: ``ks-`` + 8 lowercase letters/digits + 40 URL-safe characters."""
    return _new_token(SESSION_START)


def key_prefix(token: str) -> str:
    return token[:KEY_PREFIX_LEN]


def session_prefix(token: str) -> str:
    return token[:SESSION_PREFIX_LEN]


def is_key_token(token: str) -> bool:
    return _KEY_SHAPE.fullmatch(token) is not None


def is_session_token(token: str) -> bool:
    return _SESSION_SHAPE.fullmatch(token) is not None


def token_digest(token: str) -> str:
    """The SHA-256 hex digest the store keeps instead of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, digest: str) -> bool:
    """Whether ``token`` hashes to ``digest``, compared in constant time."""
    return hmac.compare_digest(token_digest(token), digest)


def new_id(kind: str) -> str:
    """A row id such as ``acct_<24 hex>``, ``key_<24 hex>`` or ``sess_<24 hex>``."""
    return f"{kind}_{secrets.token_hex(12)}"


# Values


def limits_of(row: LimitColumns) -> Limits:
    """The limits stored on an account or a key."""
    period = cast("QuotaPeriod", row.quota_period) if row.quota_period in ("day", "month") else None
    return Limits(
        rpm=row.rpm,
        tpm=row.tpm,
        max_concurrent=row.max_concurrent,
        max_tokens=row.max_tokens,
        quota_tokens=row.quota_tokens,
        quota_period=period,
    )


def key_is_active(key: ApiKey, now: datetime | None = None) -> bool:
    """Not revoked and not expired."""
    if key.revoked_at is not None:
        return False
    return key.expires_at is None or key.expires_at > (now or _now())


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    # Naive datetimes are taken to be UTC; SQLite stores no offset, so convert first.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _text(value: str, field: str, max_length: int) -> str:
    value = value.strip()
    if not value:
        raise InvalidRequestError(f"{field} must not be empty", param=field)
    if len(value) > max_length:
        raise InvalidRequestError(f"{field} is longer than {max_length} characters", param=field)
    return value


def _set_limits(row: LimitColumns, limits: Limits | None) -> None:
    limits = limits or Limits()
    if (limits.quota_tokens is None) != (limits.quota_period is None):
        raise InvalidRequestError(
            "quota_tokens and quota_period go together", param="quota_period"
        )
    row.rpm = limits.rpm
    row.tpm = limits.tpm
    row.max_concurrent = limits.max_concurrent
    row.max_tokens = limits.max_tokens
    row.quota_tokens = limits.quota_tokens
    row.quota_period = limits.quota_period


def _models(models: Sequence[str] | None) -> list[str] | None:
    if models is None:
        return None
    return list(dict.fromkeys(_text(model, "models", 200) for model in models))


# Accounts


async def create_account(
    session: AsyncSession,
    *,
    name: str,
    email: str | None = None,
    password: str | None = None,
    is_admin: bool = False,
    limits: Limits | None = None,
) -> Account:
    """Add an account. A taken email raises ``ConflictError`` (409, param "email").

    If another transaction takes the email first, the session is rolled back.
    """
    address = _text(normalize_email(email), "email", 320) if email is not None else None
    if address is not None and await _account_by_email(session, address) is not None:
        raise ConflictError(f"An account with the email {address} already exists", param="email")
    account = Account(
        id=new_id("acct"),
        name=_text(name, "name", 200),
        email=address,
        password_hash=None if password is None else await asyncio.to_thread(hash_password, password),
        is_admin=is_admin,
        disabled=False,
        created_at=_now(),
    )
    _set_limits(account, limits)
    session.add(account)
    try:
        await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        raise ConflictError(
            f"An account with the email {address} already exists", param="email"
        ) from exc
    return account


def _ref(value: str) -> str:
    """An id a client gave, as the store can compare it: PostgreSQL's text holds no NUL
    (the query would fail), and no id has one, so it becomes a character none has."""
    return value.replace("\x00", "\ufffd")


async def get_account(session: AsyncSession, account_id: str) -> Account | None:
    return await session.get(Account, _ref(account_id))


async def find_account(session: AsyncSession, ref: str) -> Account | None:
    """The account whose id, email or exact name is ``ref``.

    Names need not be unique: a name shared by several accounts raises ``ConflictError``.
    """
    ref = ref.strip()
    if not ref:
        return None
    account = await session.get(Account, ref)
    if account is None and "@" in ref:
        account = await _account_by_email(session, normalize_email(ref))
    if account is not None:
        return account
    named = (
        await session.scalars(
            select(Account).where(Account.name == ref).order_by(Account.created_at, Account.id)
        )
    ).all()
    if len(named) > 1:
        raise ConflictError(
            f"{len(named)} accounts are named {ref!r}: give the id or the email", param="account"
        )
    return named[0] if named else None


async def list_accounts(session: AsyncSession) -> list[Account]:
    result = await session.scalars(select(Account).order_by(Account.created_at, Account.id))
    return list(result.all())


async def update_account(
    session: AsyncSession,
    account_id: str,
    *,
    name: str | Unset = UNSET,
    disabled: bool | Unset = UNSET,
    limits: Limits | None | Unset = UNSET,
) -> Account | None:
    """Change what is given (``limits=None`` clears them); None when there is no such account."""
    account = await session.get(Account, _ref(account_id))
    if account is None:
        return None
    if not isinstance(name, Unset):
        account.name = _text(name, "name", 200)
    if not isinstance(disabled, Unset):
        account.disabled = disabled
    if not isinstance(limits, Unset):
        _set_limits(account, limits)
    return account


async def authenticate(session: AsyncSession, email: str, password: str) -> Account | None:
    """The enabled account with this email and password, else None.

    An unknown email costs as much time as a wrong password. A hash made with
    weaker parameters than today's is replaced (the caller commits).
    """
    account = await _account_by_email(session, normalize_email(email))
    if account is None or account.password_hash is None:
        await asyncio.to_thread(burn_verify_time, password)
        return None
    if not await asyncio.to_thread(verify_password, account.password_hash, password):
        return None
    if account.disabled:
        return None
    if needs_rehash(account.password_hash):
        account.password_hash = await asyncio.to_thread(hash_password, password)
    return account


async def _account_by_email(session: AsyncSession, email: str) -> Account | None:
    return await session.scalar(select(Account).where(Account.email == email))


# API keys


async def create_key(
    session: AsyncSession,
    *,
    account_id: str,
    name: str,
    models: Sequence[str] | None = None,
    limits: Limits | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, ApiKey]:
    """Make a key for an account; returns the token (shown once) and the row.

    ``models`` is the allow-list (None: every model). ``limits=None`` copies the
    account's limits, which are the defaults of its keys.
    """
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFoundError(f"No account with the id {account_id}", param="account_id")
    for _ in range(8):
        token = new_key_token()
        if await session.scalar(select(ApiKey.id).where(ApiKey.prefix == key_prefix(token))) is None:
            break
    else:  # 36**8 public ids: reaching this means the random source is broken
        raise RuntimeError("could not draw an unused key prefix")
    key = ApiKey(
        id=new_id("key"),
        account_id=account.id,
        name=_text(name, "name", 200),
        prefix=key_prefix(token),
        digest=token_digest(token),
        models=_models(models),
        expires_at=None if expires_at is None else _utc(expires_at),
        revoked_at=None,
        created_at=_now(),
    )
    _set_limits(key, limits if limits is not None else limits_of(account))
    session.add(key)
    await session.flush()
    return token, key


async def list_keys(
    session: AsyncSession, *, account_id: str | None = None, include_revoked: bool = True
) -> list[ApiKey]:
    """Keys, oldest first; only one account's when ``account_id`` is given."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if account_id is not None:
        query = query.where(ApiKey.account_id == _ref(account_id))
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list((await session.scalars(query)).all())


async def get_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, _ref(key_id))


async def find_key(session: AsyncSession, ref: str) -> ApiKey | None:
    """The key whose id or prefix is ``ref``; a whole token is matched by its prefix.

    A trailing "…", as ``kathan keys list`` shows prefixes, is ignored.
    """
    ref = ref.strip().rstrip("…")
    if not ref:
        return None
    key = await session.get(ApiKey, ref)
    if key is not None:
        return key
    if ref.startswith(KEY_START) and len(ref) > KEY_PREFIX_LEN:
        ref = key_prefix(ref)
    return await session.scalar(select(ApiKey).where(ApiKey.prefix == ref))


async def key_by_prefix(session: AsyncSession, prefix: str) -> tuple[ApiKey, Account] | None:
    """The key with this prefix and its account, in one query, for authentication.

    It does not check the digest, revocation or expiry: see ``token_matches`` and
    ``key_is_active``.
    """
    row = (
        await session.execute(
            select(ApiKey, Account)
            .join(Account, ApiKey.account_id == Account.id)
            .where(ApiKey.prefix == prefix)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def revoke_key(
    session: AsyncSession, key_id: str, *, account_id: str | None = None
) -> ApiKey | None:
    """Mark a key revoked (the first revocation time is kept); None if there is no such key,
    or it belongs to another account than ``account_id``."""
    key = await _owned_key(session, key_id, account_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = _now()
    return key


async def update_key(
    session: AsyncSession,
    key_id: str,
    *,
    account_id: str | None = None,
    name: str | Unset = UNSET,
    models: Sequence[str] | None | Unset = UNSET,
    limits: Limits | None | Unset = UNSET,
    expires_at: datetime | None | Unset = UNSET,
) -> ApiKey | None:
    """Change what is given (None clears models, limits or expiry); None if not found.

    A revoked key is gone for good: changing it is a ``ConflictError``, not a
    success that would read as if the key could be used again."""
    key = await _owned_key(session, key_id, account_id)
    if key is None:
        return None
    if key.revoked_at is not None:
        raise ConflictError(
            f"Key '{key_id}' was revoked; a revoked key cannot be changed (create a "
            "new one).", param="key_id", code="key_revoked")
    if not isinstance(name, Unset):
        key.name = _text(name, "name", 200)
    if not isinstance(models, Unset):
        key.models = _models(models)
    if not isinstance(limits, Unset):
        _set_limits(key, limits)
    if not isinstance(expires_at, Unset):
        key.expires_at = None if expires_at is None else _utc(expires_at)
    return key


async def count_keys(session: AsyncSession, *, account_id: str | None = None) -> int:
    query = select(func.count()).select_from(ApiKey)
    if account_id is not None:
        query = query.where(ApiKey.account_id == _ref(account_id))
    return int(await session.scalar(query) or 0)


async def _owned_key(session: AsyncSession, key_id: str, account_id: str | None) -> ApiKey | None:
    key = await session.get(ApiKey, _ref(key_id))
    if key is None or (account_id is not None and key.account_id != account_id):
        return None
    return key


# Login sessions


async def create_session(
    session: AsyncSession, account_id: str, *, ttl_seconds: int = 86400
) -> tuple[str, LoginSession]:
    """Start a login session; returns its token (shown once) and the row."""
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    for _ in range(8):
        token = new_session_token()
        prefix = session_prefix(token)
        if await session.scalar(select(LoginSession.id).where(LoginSession.prefix == prefix)) is None:
            break
    else:
        raise RuntimeError("could not draw an unused session prefix")
    now = _now()
    login = LoginSession(
        id=new_id("sess"),
        account_id=account_id,
        prefix=prefix,
        digest=token_digest(token),
        expires_at=now + timedelta(seconds=ttl_seconds),
        created_at=now,
    )
    session.add(login)
    await session.flush()
    return token, login


async def end_session(session: AsyncSession, prefix: str) -> bool:
    """Delete the login session with this prefix (a logout); whether there was one."""
    result = await session.execute(delete(LoginSession).where(LoginSession.prefix == prefix))
    return bool(getattr(result, "rowcount", 0))


async def delete_expired_sessions(session: AsyncSession, now: datetime | None = None) -> None:
    """Remove the login sessions that expired (run at each login: one DELETE)."""
    await session.execute(
        delete(LoginSession).where(LoginSession.expires_at < (now or _now())))


async def session_by_prefix(
    session: AsyncSession, prefix: str
) -> tuple[LoginSession, Account] | None:
    """The login session with this prefix and its account. The caller checks the digest
    (``token_matches``), ``expires_at`` and ``account.disabled``."""
    row = (
        await session.execute(
            select(LoginSession, Account)
            .join(Account, LoginSession.account_id == Account.id)
            .where(LoginSession.prefix == prefix)
        )
    ).first()
    return None if row is None else (row[0], row[1])


# Usage ledger

_USAGE_TABLE = Base.metadata.tables["usage"]
_USAGE_COLUMNS = frozenset(_USAGE_TABLE.columns.keys())
_USAGE_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "account_id": None,
        "key_id": None,
        "key_prefix": None,
        "prompt_tokens": 0,
        "cached_tokens": 0,
        "completion_tokens": 0,
        "ttft_ms": None,
        "finish_reason": None,
        "error_code": None,
        "endpoint": "chat/completions",
    }
)


@dataclass(frozen=True, slots=True)
class UsageSummaryRow:
    """Requests and tokens of one model through one endpoint on one UTC day."""

    day: str
    model: str
    endpoint: str
    requests: int
    succeeded: int
    failed: int
    cancelled: int
    rate_limited: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


async def insert_usage(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write usage rows (keys: ``UsageRecord``'s columns) as one executemany.

    The statement is compiled once and the rows go as parameter sets (a
    multi-VALUES statement with thousands of bound parameters costs far more
    to compile than to run). A row whose ``id`` is already stored is skipped,
    so a retried flush is harmless. ``day`` defaults to the UTC date of
    ``created_at``; token counts default to 0.
    """
    for statement, batch in _usage_batches(dialect_of(session), rows):
        await session.execute(statement, batch)


def insert_usage_sync(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """``insert_usage`` on a synchronous connection (the SQLite ledger writer's thread)."""
    for statement, batch in _usage_batches(connection.dialect.name, rows):
        connection.execute(statement, batch)


def _usage_batches(
    dialect: str, rows: Sequence[Mapping[str, Any]]
) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    if not rows:
        return
    values = [_usage_values(row) for row in rows]
    if dialect == "postgresql":
        statement: Any = postgresql_insert(_USAGE_TABLE).on_conflict_do_nothing(
            index_elements=["id"])
    elif dialect == "sqlite":
        statement = sqlite_insert(_USAGE_TABLE).on_conflict_do_nothing(index_elements=["id"])
    else:
        statement = insert(_USAGE_TABLE)
    for start in range(0, len(values), _INSERT_BATCH):
        yield statement, values[start : start + _INSERT_BATCH]


def _usage_values(row: Mapping[str, Any]) -> dict[str, Any]:
    unknown = row.keys() - _USAGE_COLUMNS
    if unknown:
        raise ValueError(f"not usage columns: {', '.join(sorted(unknown))}")
    values = {**_USAGE_DEFAULTS, **row}
    if isinstance(values.get("created_at"), datetime):
        values["created_at"] = _utc(values["created_at"])
        if "day" not in values:
            values["day"] = values["created_at"].strftime("%Y-%m-%d")
    missing = _USAGE_COLUMNS - values.keys()
    if missing:
        raise ValueError(f"usage row lacks: {', '.join(sorted(missing))}")
    return values


def _usage_filters(
    account_id: str | None, key_id: str | None, since: str | None, until: str | None,
    endpoint: str | None = None,
) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if endpoint is not None:
        filters.append(UsageRecord.endpoint == endpoint)
    if account_id is not None:
        filters.append(UsageRecord.account_id == _ref(account_id))
    if key_id == CONSOLE:  # the console playground's requests: an account's, no key's
        filters.append(UsageRecord.key_id.is_(None))
        if account_id is None:
            filters.append(UsageRecord.account_id.is_not(None))
    elif key_id is not None:
        filters.append(UsageRecord.key_id == _ref(key_id))
    if since is not None:
        filters.append(UsageRecord.day >= _day(since, "since"))
    if until is not None:
        filters.append(UsageRecord.day <= _day(until, "until"))
    return filters


def _day(value: str, param: str) -> str:
    try:
        if len(value) == 10:
            return date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise InvalidRequestError(f"{param} must be a date, YYYY-MM-DD", param=param)


def _status_count(status: str) -> ColumnElement[int]:
    return func.sum(case((UsageRecord.status == status, 1), else_=0))


async def usage_summary(
    session: AsyncSession,
    *,
    account_id: str | None = None,
    key_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    endpoint: str | None = None,
) -> list[UsageSummaryRow]:
    """Totals per (day, model, endpoint), ordered by day, model, endpoint; ``since`` and
    ``until`` ("YYYY-MM-DD") are inclusive."""
    query = (
        select(
            UsageRecord.day,
            UsageRecord.model,
            UsageRecord.endpoint,
            func.count(),
            _status_count("succeeded"),
            _status_count("failed"),
            _status_count("cancelled"),
            _status_count("rate_limited"),
            func.sum(UsageRecord.prompt_tokens),
            func.sum(UsageRecord.cached_tokens),
            func.sum(UsageRecord.completion_tokens),
        )
        .where(*_usage_filters(account_id, key_id, since, until, endpoint))
        .group_by(UsageRecord.day, UsageRecord.model, UsageRecord.endpoint)
        .order_by(UsageRecord.day, UsageRecord.model, UsageRecord.endpoint)
    )
    return [
        UsageSummaryRow(row[0], row[1], row[2], *(int(value or 0) for value in row[3:]))
        for row in await session.execute(query)
    ]


async def tokens_since(session: AsyncSession, key_id: str, day: str) -> int:
    """Prompt plus completion tokens of a key's requests on ``day`` ("YYYY-MM-DD") and after:
    what a restarted limiter's quota starts from. ``key_id`` may be a ``console_limit_id``:
    the console playground's requests of that account."""
    account_id = console_account(key_id)
    which = ((UsageRecord.account_id == account_id, UsageRecord.key_id.is_(None))
             if account_id is not None else (UsageRecord.key_id == key_id,))
    total = await session.scalar(
        select(
            func.coalesce(func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens), 0)
        ).where(*which, UsageRecord.day >= _day(day, "day"))
    )
    return int(total or 0)


# The console playground runs under its account's own limits, counted apart from every
# key: its limiter and quota identity, and the usage filter that selects its requests.
CONSOLE = "console"


def console_limit_id(account_id: str) -> str:
    return f"{CONSOLE}:{account_id}"


def console_account(limit_id: str) -> str | None:
    """The account of a ``console_limit_id``, None for a key id."""
    head, sep, account_id = limit_id.partition(":")
    return account_id if sep and head == CONSOLE else None


async def last_used(session: AsyncSession, key_ids: list[str]) -> dict[str, datetime]:
    """When each of ``key_ids`` was last used (its latest ledger row), for those used."""
    if not key_ids:
        return {}
    query = (select(UsageRecord.key_id, func.max(UsageRecord.created_at))
             .where(UsageRecord.key_id.in_(key_ids)).group_by(UsageRecord.key_id))
    return {row[0]: row[1] for row in await session.execute(query) if row[0] is not None}


async def count_usage(
    session: AsyncSession,
    *,
    account_id: str | None = None,
    key_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> int:
    query = select(func.count()).select_from(UsageRecord)
    return int(
        await session.scalar(query.where(*_usage_filters(account_id, key_id, since, until))) or 0
    )


# Stored responses (POST /v1/responses with store: true)


async def store_response(
    session: AsyncSession, *, response_id: str, owner: str, items: list[dict[str, Any]],
    response: dict[str, Any],
) -> None:
    session.add(StoredResponse(id=response_id, owner=owner, created_at=_now(), items=items,
                               response=response))


async def get_response(session: AsyncSession, response_id: str,
                       owner: str) -> StoredResponse | None:
    """The stored response ``response_id`` when ``owner`` owns it (another's is None, as
    one that does not exist is)."""
    row = await session.get(StoredResponse, response_id)
    return row if row is not None and row.owner == owner else None


async def delete_response(session: AsyncSession, response_id: str, owner: str) -> bool:
    result = await session.execute(delete(StoredResponse).where(
        StoredResponse.id == response_id, StoredResponse.owner == owner))
    return bool(getattr(result, "rowcount", 0))


# First run


async def bootstrap_admin(session: AsyncSession) -> str | None:
    """On an empty store, create the "admin" account and its "admin" key, commit, and
    return the key (to show once); otherwise None.

    Takes a fresh session. Processes starting together are serialised, so only one
    creates the admin.
    """
    await serialize_setup(session)
    if await session.scalar(select(func.count()).select_from(Account)):
        await session.rollback()
        return None
    account = await create_account(session, name="admin", is_admin=True)
    token, _ = await create_key(session, account_id=account.id, name="admin")
    await session.commit()
    return token
