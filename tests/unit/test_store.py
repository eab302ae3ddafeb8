"""The store against SQLite (a temporary file) and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from kathan.errors import ConflictError, InvalidRequestError, NotFoundError
from kathan.limits.base import Limits
from kathan.settings import Settings
from kathan.store import repo
from kathan.store.db import Database, resolve_url, safe_url
from kathan.store.models import Base
from kathan.store.passwords import hash_password, verify_password
from tests.services import create_database, drop_database, require_postgres

TABLES = {"accounts", "api_keys", "sessions", "usage"}


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this module, dropped afterwards."""
    base = require_postgres()
    name = f"kathan_test_store_{uuid.uuid4().hex[:12]}"
    url = asyncio.run(create_database(base, name))
    yield url
    asyncio.run(drop_database(base, name))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store; PostgreSQL's schema is emptied before each test."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'kathan.db'}"
    url: str = request.getfixturevalue("postgres_url")
    asyncio.run(_reset_schema(url))
    return resolve_url(Settings(database_url=url))


async def _reset_schema(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.upgrade()
    yield database
    await database.dispose()


async def _account(db: Database, **fields: Any) -> str:
    async with db.session() as session:
        account = await repo.create_account(session, **{"name": "alice", **fields})
        await session.commit()
        return account.id


# Tokens, URLs and passwords need no database


def test_tokens_have_their_documented_shape() -> None:
    key = repo.new_key_token()
    assert key.startswith("sk-kathan-") and len(key) == 58
    assert repo.is_key_token(key) and not repo.is_session_token(key)
    assert repo.key_prefix(key) == key[:18] and repo.KEY_PREFIX_LEN == 18
    assert key[10:18].isalnum() and key[10:18] == key[10:18].lower()
    session = repo.new_session_token()
    assert session.startswith("ks-") and len(session) == 51
    assert repo.is_session_token(session) and not repo.is_key_token(session)
    assert repo.session_prefix(session) == session[:11] and repo.SESSION_PREFIX_LEN == 11
    assert not repo.is_key_token("sk-kathan-" + "x" * 43)  # a static key, other shape
    assert len(repo.token_digest(key)) == 64
    assert repo.token_matches(key, repo.token_digest(key))
    assert not repo.token_matches(key + "x", repo.token_digest(key))
    assert repo.new_id("acct").startswith("acct_") and len(repo.new_id("acct")) == 29


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        ("postgresql://u:pw@db:5432/k", "postgresql+asyncpg://u:pw@db:5432/k"),
        ("postgres://u@db/k", "postgresql+asyncpg://u@db/k"),
        ("postgresql+asyncpg://u@db/k", "postgresql+asyncpg://u@db/k"),
        ("sqlite:////srv/k.db", "sqlite+aiosqlite:////srv/k.db"),
        ("sqlite+aiosqlite:///k.db", "sqlite+aiosqlite:///k.db"),
    ],
)
def test_resolve_url_picks_an_async_driver(given: str, resolved: str) -> None:
    assert resolve_url(Settings(database_url=given)) == resolved


def test_resolve_url_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "kathan"
    url = resolve_url(Settings(data_dir=data_dir))
    assert url == f"sqlite+aiosqlite:///{data_dir.resolve()}/kathan.db"
    assert data_dir.is_dir() and data_dir.stat().st_mode & 0o777 == 0o700


def test_safe_url_hides_the_password() -> None:
    assert "secret" not in safe_url("postgresql+asyncpg://u:secret@db/k")


def test_password_hashes_verify_and_never_raise() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "wrong")
    assert not verify_password("not a hash", "correct horse")


# Migrations


def _schema(conn: Connection) -> tuple[set[str], list[Any]]:
    tables = set(inspect(conn).get_table_names())
    return tables, compare_metadata(MigrationContext.configure(conn), Base.metadata)


async def test_upgrade_creates_the_tables_and_is_idempotent(db_url: str) -> None:
    database = Database(db_url)
    try:
        assert await database.revision() is None
        await database.upgrade()
        await database.upgrade()
        assert await database.revision() == Database.head() is not None
        async with database.engine.connect() as conn:
            tables, differences = await conn.run_sync(_schema)
        assert TABLES | {"alembic_version"} <= tables
        assert differences == []  # the migration builds exactly the models' tables
    finally:
        await database.dispose()


async def test_concurrent_upgrades_do_not_collide(db_url: str) -> None:
    first, second = Database(db_url), Database(db_url)
    try:
        await asyncio.gather(first.upgrade(), second.upgrade())
        assert await first.revision() == Database.head()
    finally:
        await first.dispose()
        await second.dispose()


async def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'k.db'}")
    try:
        async with database.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 5000
        assert database.dialect == "sqlite"
    finally:
        await database.dispose()


# Accounts


async def test_accounts_are_created_found_and_updated(db: Database) -> None:
    async with db.session() as session:
        alice = await repo.create_account(
            session, name="alice", email="  Alice@Example.COM ", limits=Limits(rpm=5)
        )
        bob = await repo.create_account(session, name="bob", is_admin=True)
        await session.commit()
    assert alice.id.startswith("acct_") and alice.email == "alice@example.com"
    assert alice.created_at.tzinfo is not None and not alice.is_admin and not alice.disabled
    async with db.session() as session:
        assert [a.id for a in await repo.list_accounts(session)] == [alice.id, bob.id]
        for ref in (alice.id, "ALICE@example.com", "alice"):
            found = await repo.find_account(session, ref)
            assert found is not None and found.id == alice.id
        assert await repo.find_account(session, "carol") is None
        assert await repo.get_account(session, "acct_missing") is None
        updated = await repo.update_account(
            session, bob.id, name="robert", disabled=True, limits=Limits(tpm=100)
        )
        assert updated is not None
        await session.commit()
    async with db.session() as session:
        again = await repo.get_account(session, bob.id)
        assert again is not None and again.name == "robert" and again.disabled and again.is_admin
        assert repo.limits_of(again) == Limits(tpm=100)
        assert again.created_at.tzinfo is not None  # aware, also from SQLite
        assert await repo.update_account(session, "acct_missing", name="x") is None


async def test_a_taken_email_is_a_conflict(db: Database) -> None:
    await _account(db, email="alice@example.com")
    async with db.session() as session:
        with pytest.raises(ConflictError) as caught:
            await repo.create_account(session, name="other", email="ALICE@example.com")
    assert caught.value.status_code == 409 and caught.value.param == "email"


async def test_a_shared_name_is_ambiguous(db: Database) -> None:
    await _account(db, name="twin")
    await _account(db, name="twin")
    async with db.session() as session:
        with pytest.raises(ConflictError, match="2 accounts are named"):
            await repo.find_account(session, "twin")


async def test_authenticate(db: Database) -> None:
    account_id = await _account(db, email="alice@example.com", password="s3cret pass")
    await _account(db, name="nopass", email="nopass@example.com")
    async with db.session() as session:
        found = await repo.authenticate(session, " Alice@example.com", "s3cret pass")
        assert found is not None and found.id == account_id
        assert found.password_hash is not None and "s3cret" not in found.password_hash
        assert await repo.authenticate(session, "alice@example.com", "wrong") is None
        assert await repo.authenticate(session, "nobody@example.com", "s3cret pass") is None
        assert await repo.authenticate(session, "nopass@example.com", "") is None
        await repo.update_account(session, account_id, disabled=True)
        await session.commit()
        assert await repo.authenticate(session, "alice@example.com", "s3cret pass") is None


# API keys


async def test_key_round_trip(db: Database) -> None:
    account_id = await _account(db, is_admin=True)
    expires = datetime(2031, 1, 31, tzinfo=UTC)
    limits = Limits(rpm=60, tpm=1000, max_concurrent=2, quota_tokens=50_000, quota_period="day")
    async with db.session() as session:
        token, key = await repo.create_key(
            session, account_id=account_id, name="laptop", models=["m1", "m2", "m1"],
            limits=limits, expires_at=expires,
        )
        await session.commit()
    assert repo.is_key_token(token) and key.prefix == token[:18] and key.id.startswith("key_")
    assert key.digest == repo.token_digest(token) != token

    async with db.session() as session:
        found = await repo.key_by_prefix(session, repo.key_prefix(token))
        assert found is not None
        stored, account = found
        assert stored.id == key.id and account.id == account_id and account.is_admin
        assert repo.token_matches(token, stored.digest)
        assert not repo.token_matches(token[:-1] + ("A" if token[-1] != "A" else "B"), stored.digest)
        assert stored.models == ["m1", "m2"]
        assert repo.limits_of(stored) == limits
        assert stored.expires_at == expires and stored.revoked_at is None
        assert repo.key_is_active(stored)
        assert not repo.key_is_active(stored, now=expires + timedelta(seconds=1))
        assert await repo.key_by_prefix(session, "sk-kathan-00000000") is None
        for ref in (key.id, key.prefix, key.prefix + "…", token):
            by_ref = await repo.find_key(session, ref)
            assert by_ref is not None and by_ref.id == key.id
        assert await repo.find_key(session, "sk-kathan-zzzzzzzz") is None
        assert await repo.get_key(session, key.id) is not None


async def test_keys_default_to_their_account_limits_and_every_model(db: Database) -> None:
    account_id = await _account(db, limits=Limits(rpm=7, quota_tokens=10, quota_period="month"))
    async with db.session() as session:
        _, key = await repo.create_key(session, account_id=account_id, name="k")
        await session.commit()
    async with db.session() as session:
        stored = await repo.get_key(session, key.id)
        assert stored is not None and stored.models is None and stored.expires_at is None
        assert repo.limits_of(stored) == Limits(rpm=7, quota_tokens=10, quota_period="month")


async def test_key_validation(db: Database) -> None:
    account_id = await _account(db)
    async with db.session() as session:
        with pytest.raises(NotFoundError):
            await repo.create_key(session, account_id="acct_missing", name="k")
        with pytest.raises(InvalidRequestError, match="name"):
            await repo.create_key(session, account_id=account_id, name="  ")
        with pytest.raises(InvalidRequestError, match="quota"):
            await repo.create_key(
                session, account_id=account_id, name="k", limits=Limits(quota_tokens=5)
            )


async def test_keys_are_listed_updated_and_revoked(db: Database) -> None:
    alice = await _account(db)
    bob = await _account(db, name="bob")
    async with db.session() as session:
        _, first = await repo.create_key(session, account_id=alice, name="first")
        _, second = await repo.create_key(session, account_id=alice, name="second")
        _, other = await repo.create_key(session, account_id=bob, name="bob's")
        await session.commit()
    async with db.session() as session:
        assert await repo.revoke_key(session, other.id, account_id=alice) is None  # not hers
        revoked = await repo.revoke_key(session, first.id, account_id=alice)
        assert revoked is not None and revoked.revoked_at is not None
        when = revoked.revoked_at
        await session.commit()
    async with db.session() as session:
        again = await repo.revoke_key(session, first.id)
        assert again is not None and again.revoked_at == when  # the first time is kept
        assert not repo.key_is_active(again)
        assert await repo.revoke_key(session, "key_missing") is None
        updated = await repo.update_key(
            session, second.id, name="renamed", models=["m"], limits=Limits(rpm=1),
            expires_at=datetime(2030, 6, 1, 12, 0),
        )
        assert updated is not None
        assert await repo.update_key(session, other.id, account_id=alice, name="x") is None
        await session.commit()
    async with db.session() as session:
        all_keys = await repo.list_keys(session)
        assert [k.id for k in all_keys] == [first.id, second.id, other.id]
        assert [k.id for k in await repo.list_keys(session, account_id=alice)] == [
            first.id, second.id,
        ]
        active = await repo.list_keys(session, account_id=alice, include_revoked=False)
        assert [k.id for k in active] == [second.id]
        assert active[0].name == "renamed" and active[0].models == ["m"]
        assert repo.limits_of(active[0]) == Limits(rpm=1)
        assert active[0].expires_at == datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
        assert await repo.count_keys(session) == 3
        assert await repo.count_keys(session, account_id=bob) == 1
        cleared = await repo.update_key(session, second.id, models=None, limits=None)
        assert cleared is not None and cleared.models is None and repo.limits_of(cleared).none


# Login sessions


async def test_login_sessions(db: Database) -> None:
    account_id = await _account(db, email="a@example.com", password="pw")
    async with db.session() as session:
        token, login = await repo.create_session(session, account_id, ttl_seconds=60)
        await session.commit()
    assert repo.is_session_token(token) and login.id.startswith("sess_")
    async with db.session() as session:
        found = await repo.session_by_prefix(session, repo.session_prefix(token))
        assert found is not None
        stored, account = found
        assert stored.id == login.id and account.id == account_id
        assert repo.token_matches(token, stored.digest)
        lifetime = stored.expires_at - stored.created_at
        assert lifetime == timedelta(seconds=60)
        assert await repo.session_by_prefix(session, "sess-none") is None


async def test_logout_and_expired_sessions_are_removed(db: Database) -> None:
    account_id = await _account(db, email="b@example.com", password="pw")
    async with db.session() as session:
        short, _ = await repo.create_session(session, account_id, ttl_seconds=60)
        long, _ = await repo.create_session(session, account_id, ttl_seconds=3600)
        ended, _ = await repo.create_session(session, account_id, ttl_seconds=3600)
        await session.commit()
    async with db.session() as session:
        assert await repo.end_session(session, repo.session_prefix(ended))
        assert not await repo.end_session(session, repo.session_prefix(ended))
        await repo.delete_expired_sessions(
            session, now=datetime.now(UTC) + timedelta(seconds=120))
        await session.commit()
    async with db.session() as session:
        left = [await repo.session_by_prefix(session, repo.session_prefix(t))
                for t in (short, long, ended)]
    assert [found is not None for found in left] == [False, True, False]


# Usage ledger


def _usage(request_id: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": request_id,
        "created_at": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        "account_id": "acct_1",
        "key_id": "key_1",
        "key_prefix": "sk-kathan-abcdefgh",
        "model": "m1",
        "status": "succeeded",
        "http_status": 200,
        "streamed": False,
        "prompt_tokens": 10,
        "cached_tokens": 4,
        "completion_tokens": 5,
        "ttft_ms": 12.5,
        "latency_ms": 40.0,
        "finish_reason": "stop",
    }
    row.update(fields)
    return row


async def test_insert_usage_is_idempotent_on_id(db: Database) -> None:
    rows = [_usage(f"req_{n}") for n in range(3)]
    async with db.session() as session:
        await repo.insert_usage(session, rows)
        await session.commit()
    async with db.session() as session:
        await repo.insert_usage(session, rows + [_usage("req_3")])  # a retried flush
        await repo.insert_usage(session, [])
        await session.commit()
    async with db.session() as session:
        assert await repo.count_usage(session) == 4
        assert await repo.count_usage(session, key_id="key_1", since="2026-03-01") == 4
        assert await repo.count_usage(session, key_id="key_2") == 0


async def test_insert_usage_checks_columns_and_fills_defaults(db: Database) -> None:
    minimal = {
        "id": "req_min",
        "created_at": datetime(2026, 3, 2, 23, 30, tzinfo=UTC),
        "model": "m1",
        "status": "failed",
        "http_status": 500,
        "streamed": True,
        "latency_ms": 1.0,
    }
    async with db.session() as session:
        with pytest.raises(ValueError, match="not usage columns: bogus"):
            await repo.insert_usage(session, [{**minimal, "bogus": 1}])
        with pytest.raises(ValueError, match="lacks: model"):
            await repo.insert_usage(session, [{k: v for k, v in minimal.items() if k != "model"}])
        await repo.insert_usage(session, [minimal])
        await session.commit()
    async with db.session() as session:
        [row] = await repo.usage_summary(session)
    assert (row.day, row.requests, row.failed, row.prompt_tokens) == ("2026-03-02", 1, 1, 0)


async def test_usage_summary_groups_by_day_and_model(db: Database) -> None:
    rows = [
        _usage("a", model="m2"),
        _usage("b", status="failed", http_status=500, completion_tokens=0),
        _usage("c", status="cancelled"),
        _usage("d", status="rate_limited", http_status=429, prompt_tokens=0, cached_tokens=0,
               completion_tokens=0),
        _usage("e", created_at=datetime(2026, 3, 2, 0, 5, tzinfo=UTC), key_id="key_2",
               account_id="acct_2"),
        _usage("f", day="2026-02-28", created_at=datetime(2026, 2, 28, 9, tzinfo=UTC)),
    ]
    async with db.session() as session:
        await repo.insert_usage(session, rows)
        await session.commit()
    async with db.session() as session:
        summary = await repo.usage_summary(session)
        assert [(r.day, r.model) for r in summary] == [
            ("2026-02-28", "m1"), ("2026-03-01", "m1"), ("2026-03-01", "m2"), ("2026-03-02", "m1"),
        ]
        march_first = summary[1]
        assert march_first == repo.UsageSummaryRow(
            day="2026-03-01", model="m1", endpoint="chat/completions", requests=3, succeeded=0, failed=1, cancelled=1,
            rate_limited=1, prompt_tokens=20, cached_tokens=8, completion_tokens=5,
        )
        assert [r.day for r in await repo.usage_summary(session, since="2026-03-01",
                                                         until="2026-03-01")] == [
            "2026-03-01", "2026-03-01",
        ]
        by_key = await repo.usage_summary(session, key_id="key_2")
        assert [(r.day, r.requests) for r in by_key] == [("2026-03-02", 1)]
        assert await repo.usage_summary(session, account_id="acct_none") == []
        assert await repo.usage_summary(session, endpoint="responses") == []
        with pytest.raises(InvalidRequestError, match="since"):
            await repo.usage_summary(session, since="March")


async def test_tokens_since_sums_a_keys_rows_from_a_day(db: Database) -> None:
    async with db.session() as session:
        await repo.insert_usage(session, [
            _usage("a", created_at=datetime(2026, 3, 1, tzinfo=UTC)),
            _usage("b", created_at=datetime(2026, 3, 2, tzinfo=UTC), prompt_tokens=100),
            _usage("c", created_at=datetime(2026, 3, 3, tzinfo=UTC), completion_tokens=1),
            _usage("d", created_at=datetime(2026, 3, 3, tzinfo=UTC), key_id="key_2"),
        ])
        await session.commit()
    async with db.session() as session:
        assert await repo.tokens_since(session, "key_1", "2026-03-02") == 105 + 11
        assert await repo.tokens_since(session, "key_1", "2026-03-01") == 15 + 105 + 11
        assert await repo.tokens_since(session, "key_1", "2026-04-01") == 0
        assert await repo.tokens_since(session, "key_9", "2026-03-01") == 0


# First run


async def test_bootstrap_admin_happens_once(db: Database) -> None:
    async with db.session() as session:
        token = await repo.bootstrap_admin(session)
    assert token is not None and repo.is_key_token(token)
    async with db.session() as session:
        assert await repo.bootstrap_admin(session) is None
    async with db.session() as session:
        found = await repo.key_by_prefix(session, repo.key_prefix(token))
        assert found is not None
        key, account = found
        assert key.name == "admin" and account.name == "admin" and account.is_admin
        assert len(await repo.list_accounts(session)) == 1


async def test_bootstrap_admin_is_safe_when_processes_start_together(db_url: str) -> None:
    databases = [Database(db_url) for _ in range(3)]
    try:
        await databases[0].upgrade()

        async def bootstrap(database: Database) -> str | None:
            async with database.session() as session:
                return await repo.bootstrap_admin(session)

        tokens = await asyncio.gather(*(bootstrap(d) for d in databases))
        assert sum(token is not None for token in tokens) == 1
        async with databases[0].session() as session:
            assert len(await repo.list_accounts(session)) == 1
            assert await repo.count_keys(session) == 1
    finally:
        for database in databases:
            await database.dispose()


# Secrets at rest


async def test_the_database_never_holds_a_plaintext_token(db: Database, db_url: str) -> None:
    account_id = await _account(db, email="a@example.com", password="hunter2 hunter2")
    async with db.session() as session:
        key, _ = await repo.create_key(session, account_id=account_id, name="k")
        login, _ = await repo.create_session(session, account_id)
        await session.commit()
    secrets = [key, key[18:], login, login[11:], "hunter2 hunter2"]
    if db.dialect == "sqlite":
        path = Path(db_url.split("///", 1)[1])
        stored = b"".join(
            p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists()
        )
        assert key[:18].encode() in stored  # the search does see what is there
        for secret in secrets:
            assert secret.encode() not in stored
    else:
        texts = await _all_postgres_text(db)
        assert any(key[:18] in value for value in texts)
        for secret in secrets:
            assert not any(secret in value for value in texts)


async def _all_postgres_text(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        columns = (
            await conn.execute(
                text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public'"
                )
            )
        ).all()
        values: list[str] = []
        for table, column in columns:
            result = await conn.execute(text(f'SELECT "{column}"::text FROM "{table}"'))
            values.extend(str(value) for value in result.scalars().all() if value is not None)
        return values


async def test_write_many_stores_rows_readable_through_the_async_engine(db: Database) -> None:
    # The ledger's path (a synchronous engine for SQLite): the rows read back the same.
    rows = [_usage(f"w_{n}", created_at=datetime(2026, 3, 1, 12, 0, n, tzinfo=UTC))
            for n in range(3)]
    await db.write_many(lambda conn: repo.insert_usage_sync(conn, rows))
    await db.write_many(lambda conn: repo.insert_usage_sync(conn, rows))  # a retried flush
    async with db.session() as session:
        assert await repo.count_usage(session, key_id="key_1", since="2026-03-01") == 3
        [summary] = await repo.usage_summary(session)
    assert (summary.day, summary.requests, summary.prompt_tokens) == ("2026-03-01", 3, 30)


async def test_write_many_waits_off_the_loop_for_another_process_lock(tmp_path: Path) -> None:
    """A SQLite file another connection is writing to: the write does not block the
    event loop for the busy timeout; it waits in a thread and lands once the lock goes."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'k.db'}")
    await db.upgrade()
    holder = sqlite3.connect(tmp_path / "k.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process's write transaction
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        writing = asyncio.create_task(
            db.write_many(lambda conn: repo.insert_usage_sync(conn, [_usage("locked")])))
        await asyncio.sleep(0.3)
        assert not writing.done() and ticks >= 10  # waiting, and the loop runs on
        holder.execute("COMMIT")
        await asyncio.wait_for(writing, 10)
    finally:
        ticker.cancel()
        holder.close()
    async with db.session() as session:
        assert await repo.count_usage(session) == 1
    await db.dispose()


async def test_usage_summary_splits_and_filters_by_endpoint(db: Database) -> None:
    rows = [_usage("a"), _usage("b", endpoint="responses"), _usage("c", endpoint="responses"),
            _usage("d", endpoint="embeddings", completion_tokens=0)]
    async with db.session() as session:
        await repo.insert_usage(session, rows)
        await session.commit()
    async with db.session() as session:
        summary = await repo.usage_summary(session)
        assert [(r.endpoint, r.requests, r.completion_tokens) for r in summary] == [
            ("chat/completions", 1, 5), ("embeddings", 1, 0), ("responses", 2, 10)]
        [only] = await repo.usage_summary(session, endpoint="responses")
        assert (only.endpoint, only.requests, only.prompt_tokens) == ("responses", 2, 20)


async def test_a_stored_response_is_its_owners_alone(db: Database) -> None:
    async with db.session() as session:
        await repo.store_response(session, response_id="resp_1", owner="acct_1",
                                  items=[{"role": "user", "content": "hi"}],
                                  response={"id": "resp_1", "output": []})
        await session.commit()
    async with db.session() as session:
        row = await repo.get_response(session, "resp_1", "acct_1")
        assert row is not None and row.items == [{"role": "user", "content": "hi"}]
        assert row.response == {"id": "resp_1", "output": []}
        assert await repo.get_response(session, "resp_1", "acct_2") is None
        assert not await repo.delete_response(session, "resp_1", "acct_2")
        assert await repo.delete_response(session, "resp_1", "acct_1")
        await session.commit()
    async with db.session() as session:
        assert await repo.get_response(session, "resp_1", "acct_1") is None
        assert not await repo.delete_response(session, "resp_1", "acct_1")
