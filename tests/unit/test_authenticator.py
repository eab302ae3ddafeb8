"""Stored keys are looked up once per prefix at a time, refreshed ahead of expiry, and a
revocation on this replica wins over a lookup under way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from kathan.auth.authenticator import Authenticator
from kathan.store import repo
from kathan.store.db import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lookups:
    """``repo.key_by_prefix`` counted, each call held until ``release`` is set."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        await self.release.wait()
        return await self.real(*args, **kwargs)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[Database, str, str]]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'k.db'}")
    await db.upgrade()
    async with db.session() as s:
        account = await repo.create_account(s, name="a")
        token, key = await repo.create_key(s, account_id=account.id, name="k")
        await s.commit()
    yield db, token, key.id
    await db.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Lookups:
    counted = Lookups(repo.key_by_prefix)
    monkeypatch.setattr(repo, "key_by_prefix", counted)
    return counted


async def test_many_requests_of_a_new_key_share_one_lookup(
    store: tuple[Database, str, str], clock: Clock, lookups: Lookups
) -> None:
    db, token, key_id = store
    auth = Authenticator(db=db, cache_seconds=10, clock=clock)
    lookups.release.clear()
    waiting = [asyncio.create_task(auth.verify(token)) for _ in range(50)]
    await asyncio.sleep(0.01)
    lookups.release.set()
    principals = await asyncio.gather(*waiting)
    assert lookups.calls == 1
    assert {p.key_id for p in principals if p is not None} == {key_id}
    assert all(p is not None for p in principals)


async def test_a_key_in_use_is_refreshed_ahead_and_no_request_waits(
    store: tuple[Database, str, str], clock: Clock, lookups: Lookups
) -> None:
    db, token, _ = store
    auth = Authenticator(db=db, cache_seconds=10, clock=clock)
    assert await auth.verify(token) is not None
    clock.now += 7  # within the cache time, before its last quarter: nothing to do
    assert await auth.verify(token) is not None
    assert lookups.calls == 1
    clock.now += 1.5  # its last quarter: answered from the cache, refreshed behind it
    lookups.release.clear()
    answers = [await auth.verify(token) for _ in range(20)]  # none waits for the store
    assert all(a is not None for a in answers)
    await asyncio.sleep(0.01)  # the refresh starts, and waits for the store
    assert lookups.calls == 2  # one refresh, however many requests saw it due
    lookups.release.set()
    await asyncio.sleep(0.05)
    clock.now += 9  # past the first entry's end, within the refreshed one's
    assert await auth.verify(token) is not None
    assert lookups.calls == 2


async def test_a_revocation_here_wins_over_a_lookup_under_way(
    store: tuple[Database, str, str], clock: Clock, lookups: Lookups
) -> None:
    db, token, key_id = store
    auth = Authenticator(db=db, cache_seconds=10, clock=clock)
    assert await auth.verify(token) is not None
    clock.now += 8.5
    lookups.release.clear()
    assert await auth.verify(token) is not None  # starts a refresh, which reads the key
    await asyncio.sleep(0.01)
    async with db.session() as s:
        await repo.revoke_key(s, key_id)
        await s.commit()
    auth.forget(token[: repo.KEY_PREFIX_LEN])  # as the API does after a revocation
    lookups.release.set()  # the stale refresh ends after the revocation
    await asyncio.sleep(0.05)
    assert await auth.verify(token) is None
    assert lookups.calls == 3  # the refresh, then a lookup that sees the revocation


async def test_a_cancelled_request_does_not_cancel_the_lookup_others_wait_for(
    store: tuple[Database, str, str], clock: Clock, lookups: Lookups
) -> None:
    db, token, _ = store
    auth = Authenticator(db=db, cache_seconds=10, clock=clock)
    lookups.release.clear()
    first = asyncio.create_task(auth.verify(token))
    second = asyncio.create_task(auth.verify(token))
    await asyncio.sleep(0.01)
    first.cancel()  # its client left
    lookups.release.set()
    assert await second is not None
    with pytest.raises(asyncio.CancelledError):
        await first
    assert lookups.calls == 1
