"""Bearer tokens to principals: static keys, stored API keys and login sessions.

The hot path has no database round trip for a known key: a stored key is
looked up by its public prefix once and then trusted from memory for
``cache_seconds`` (so a revocation made on another replica takes effect
within that time; on this replica at once). Unknown prefixes are remembered
too, so a flood of bad keys does not become a flood of queries. Every
comparison of secrets is a constant-time comparison of SHA-256 digests.

A key in use never makes its requests wait for the store after the first
lookup: one lookup per prefix runs at a time, whatever the number of requests
that need it (the rest wait for that one), and a known key is looked up again
in the background during the last quarter of its cache time, while the entry
still serves. Before this, every request that found the entry expired ran its
own query: 200 clients of one key queued 200 queries behind the busy event
loop every ``cache_seconds``, which was most of the latency tail of
``bench/soak.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from kathan.auth.principal import Principal
from kathan.store import repo
from kathan.store.db import Database

logger = logging.getLogger(__name__)

_MAX_CACHED = 100_000


def _sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class _Entry:
    """A cached lookup: the stored digest and what it grants, or nothing (unknown prefix)."""

    until: float
    digest: bytes | None = None
    principal: Principal | None = None
    revoked: bool = False


class Authenticator:
    """Checks bearer tokens.

    ``await verify(token)`` returns the ``Principal`` the token grants (a static
    key, a stored API key or, when ``allow`` names it, a login session), or None
    when it is not valid. Stored lookups are cached for ``cache_seconds``
    (``negative_seconds`` for unknown prefixes); ``forget`` drops one early.
    """

    def __init__(
        self,
        *,
        static_keys: Iterable[str] = (),
        db: Database | None = None,
        cache_seconds: float = 10.0,
        negative_seconds: float = 2.0,
        session_models: Iterable[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._static = tuple(_sha256(k) for k in static_keys)
        self._db = db
        self._cache_seconds = cache_seconds
        self._negative_seconds = negative_seconds
        # What a non-admin's console session may call (the playground): the models its
        # own keys may use (``default_account.models``), None for all.
        self._session_models = frozenset(session_models) if session_models is not None else None
        self._cache: dict[str, _Entry] = {}
        self._clock = clock
        # The lookup under way for a prefix; the cache takes its answer only while it
        # is still the one here (``forget`` removes it: a revocation wins).
        self._loading: dict[str, asyncio.Future[_Entry]] = {}

    async def verify(
        self, token: str, *, allow: Iterable[Literal["static", "key", "session"]] = (
            "static", "key")
    ) -> Principal | None:
        allowed = set(allow)
        digest = _sha256(token)
        if "static" in allowed and self._static:
            found = False
            for candidate in self._static:  # every one, so timing tells nothing
                found |= hmac.compare_digest(digest, candidate)
            if found:
                return Principal(kind="static", is_admin=True)
        if self._db is None:
            return None
        if "key" in allowed and repo.is_key_token(token):
            return await self._stored(token, digest, session=False)
        if "session" in allowed and repo.is_session_token(token):
            return await self._stored(token, digest, session=True)
        return None

    def forget(self, prefix: str) -> None:
        """Drop a cached key (after a revocation or a change of its limits)."""
        self._cache.pop(prefix, None)
        self._loading.pop(prefix, None)

    async def _stored(self, token: str, digest: bytes, *, session: bool) -> Principal | None:
        prefix = token[: repo.SESSION_PREFIX_LEN if session else repo.KEY_PREFIX_LEN]
        now = self._clock()
        entry = self._cache.get(prefix)
        if entry is None or entry.until < now:
            # Shielded: a request that is cancelled while waiting does not cancel the
            # lookup the others wait for.
            entry = await asyncio.shield(self._lookup(prefix, session))
        elif (entry.digest is not None and entry.until - now < self._cache_seconds / 4
              and prefix not in self._loading):
            self._lookup(prefix, session)  # in the background; this entry serves meanwhile
        if entry.digest is None or entry.principal is None or entry.revoked:
            return None
        if not hmac.compare_digest(digest, entry.digest):
            return None
        expires = entry.principal.expires_at
        if expires is not None and expires <= datetime.now(UTC):
            return None
        return entry.principal

    def _lookup(self, prefix: str, session: bool) -> asyncio.Future[_Entry]:
        """The lookup of ``prefix`` under way, or a new one; its answer goes to the cache."""
        pending = self._loading.get(prefix)
        if pending is not None:
            return pending
        pending = asyncio.ensure_future(self._load(prefix, session))
        pending.add_done_callback(_quiet)  # a failure nobody awaited is not an orphan
        self._loading[prefix] = pending
        return pending

    async def _load(self, prefix: str, session: bool) -> _Entry:
        try:
            now = self._clock()
            entry = await (self._load_session(prefix, now) if session
                           else self._load_key(prefix, now))
        finally:
            mine = self._loading.get(prefix) is asyncio.current_task()
            if mine:
                del self._loading[prefix]
        if mine:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[prefix] = entry
        return entry

    async def _load_key(self, prefix: str, now: float) -> _Entry:
        assert self._db is not None
        async with self._db.session() as s:
            found = await repo.key_by_prefix(s, prefix)
        if found is None:
            return _Entry(until=now + self._negative_seconds)
        key, account = found
        principal = Principal(
            kind="key",
            is_admin=account.is_admin,
            account_id=account.id,
            key_id=key.id,
            key_prefix=key.prefix,
            models=frozenset(key.models) if key.models is not None else None,
            limits=repo.limits_of(key),
            expires_at=_aware(key.expires_at),
        )
        return _Entry(
            until=now + self._cache_seconds,
            digest=bytes.fromhex(key.digest),
            principal=principal,
            revoked=key.revoked_at is not None or account.disabled,
        )

    async def _load_session(self, prefix: str, now: float) -> _Entry:
        assert self._db is not None
        async with self._db.session() as s:
            found = await repo.session_by_prefix(s, prefix)
        if found is None:
            return _Entry(until=now + self._negative_seconds)
        login, account = found
        principal = Principal(
            kind="session",
            is_admin=account.is_admin,
            account_id=account.id,
            # The console playground's requests run under the account's own limits, and
            # may use the models the account's own keys may.
            limits=repo.limits_of(account),
            models=None if account.is_admin else self._session_models,
            expires_at=_aware(login.expires_at),
        )
        return _Entry(
            until=now + self._cache_seconds,
            digest=bytes.fromhex(login.digest),
            principal=principal,
            revoked=account.disabled,
        )


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; they are UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _quiet(lookup: asyncio.Future[_Entry]) -> None:
    """A lookup that failed: its waiters (if any) got the error; a background refresh
    leaves the entry serving until it expires, and the next lookup tries again."""
    if not lookup.cancelled() and lookup.exception() is not None:
        logger.debug("refreshing a cached key failed: %r", lookup.exception())
