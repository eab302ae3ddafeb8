"""The database: URL resolution, the async engine, sessions and migrations.

SQLite (the default, a file in ``data_dir``) and PostgreSQL are reached through
the same code; only the engine's set-up differs. Datetimes read back from the
store are always timezone-aware UTC, whatever the dialect.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, DateTime, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import set_committed_value

from kathan.store import migrations
from kathan.store.models import Base

if TYPE_CHECKING:
    from kathan.settings import Settings

# Key of the PostgreSQL advisory lock that serialises migrations and first-run
# bootstrap across processes ("kathan" in ASCII).
ADVISORY_LOCK_KEY = 0x6B617468616E

# Execution option: the SQLite transaction starts with BEGIN IMMEDIATE (takes the write
# lock up front, waiting up to busy_timeout), for work other processes must not interleave.
_SQLITE_IMMEDIATE = "kathan_sqlite_immediate"
# How long a SQLite statement waits for another connection's write lock.
_SQLITE_BUSY_MS = 5000

_ASYNC_SCHEMES = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+pg8000": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
}


def resolve_url(settings: Settings) -> str:
    """The store's SQLAlchemy URL with an async driver.

    ``database_url`` when set (``postgresql://`` becomes ``postgresql+asyncpg://``,
    ``sqlite:///`` becomes ``sqlite+aiosqlite:///``); otherwise a SQLite file in
    ``data_dir``, which is created (mode 0700) if missing.

    >>> from kathan.settings import Settings
    >>> resolve_url(Settings(database_url="postgres://u@db/kathan"))
    'postgresql+asyncpg://u@db/kathan'
    """
    if settings.database_url:
        scheme, sep, rest = settings.database_url.partition("://")
        if not sep:
            raise ValueError("database_url must look like postgresql://user@host/db")
        return f"{_ASYNC_SCHEMES.get(scheme.lower(), scheme)}://{rest}"
    data_dir = settings.data_dir.expanduser()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{data_dir.resolve() / 'kathan.db'}"


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def alembic_config() -> Config:
    """Alembic's configuration, built in code: no alembic.ini is needed at run time."""
    config = Config()
    location = str(Path(migrations.__file__).resolve().parent)
    config.set_main_option("script_location", location.replace("%", "%%"))
    return config


class Database:
    """An async engine and its session factory.

    Built from a URL that ``resolve_url`` gives; ``await db.upgrade()`` brings the
    schema to the latest migration, ``async with db.session() as session:`` opens a
    session for ``kathan.store.repo``'s queries, and ``await db.dispose()`` closes
    the engine's connections.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._writer: Engine | None = None
        if make_url(url).get_backend_name() == "sqlite":
            self.engine: AsyncEngine = create_async_engine(url)
            _sqlite_setup(self.engine.sync_engine)
        else:
            self.engine = create_async_engine(
                url, pool_size=5, max_overflow=10, pool_pre_ping=True
            )
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(resolve_url(settings))

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def session(self) -> AsyncSession:
        """A new session, to use as ``async with db.session() as session:``."""
        return self._sessions()

    async def upgrade(self) -> None:
        """Apply the migrations up to head. Safe to call from several processes at once."""
        async with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn = await conn.execution_options(**{_SQLITE_IMMEDIATE: True})
            async with conn.begin():
                if self.dialect == "postgresql":
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
                    )
                await conn.run_sync(_upgrade)

    async def revision(self) -> str | None:
        """The revision the database is at; None before the first upgrade."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current_revision)

    @staticmethod
    def head() -> str | None:
        """The newest revision the migrations define."""
        return ScriptDirectory.from_config(alembic_config()).get_current_head()

    async def write_many(self, work: Callable[[Connection], None]) -> None:
        """Run ``work`` (the usage ledger's inserts) in one transaction.

        PostgreSQL: on the async engine. SQLite: on a synchronous engine over the
        same file, in the event loop's own thread, as long as the file is not locked
        by another process: a flush of a few hundred rows takes about 10 ms of the
        loop once every ``ledger_flush_seconds``. When another process holds the
        lock, the write waits for it (busy_timeout) in a worker thread instead.

        Measured with ``bench/soak.py`` (200 streaming connections, about 2,000
        requests/s): through aiosqlite, which hands every step of a transaction to
        its thread and back, and on a worker thread, which waits for the busy
        loop's GIL (3.5 s of wall time for 0.26 s of work per flush), the ledger
        wrote 1,000 to 1,500 rows/s and its buffer grew without end; here it keeps
        up.
        """
        if self.dialect != "sqlite":
            async with self.engine.begin() as conn:
                await conn.run_sync(work)
            return
        if self._writer is None:
            self._writer = create_engine(make_url(self.url).set(drivername="sqlite+pysqlite"))
            _sqlite_setup(self._writer)
        writer = self._writer

        def run(busy_ms: int) -> None:
            with writer.begin() as conn:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={busy_ms}")
                work(conn)

        try:
            run(0)
        except OperationalError as exc:
            if "locked" not in str(exc.orig) and "busy" not in str(exc.orig):
                raise
            await asyncio.to_thread(run, _SQLITE_BUSY_MS)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._writer is not None:
            self._writer.dispose()


async def serialize_setup(session: AsyncSession) -> None:
    """Make ``session``'s transaction exclusive among processes sharing the database.

    For one-off work such as the first-run bootstrap: PostgreSQL takes the advisory
    lock migrations use (held to the end of the transaction); SQLite starts the
    transaction with BEGIN IMMEDIATE. Call it first, on a session with no transaction.
    """
    if session.in_transaction():
        raise RuntimeError("serialize_setup() must start the session's transaction")
    dialect = dialect_of(session)
    if dialect == "sqlite":
        immediate: dict[str, Any] = {_SQLITE_IMMEDIATE: True}
        await session.connection(execution_options=immediate)
    elif dialect == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
        )


def dialect_of(session: AsyncSession) -> str:
    """The dialect name of the engine ``session`` is bound to."""
    if session.bind is None:
        raise RuntimeError("the session is not bound to an engine")
    return session.bind.dialect.name


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _sqlite_setup(engine: Engine) -> None:
    # aiosqlite runs each statement on its own thread, and an executemany gives the GIL
    # back at every row: with a busy event loop a 500-row ledger flush then takes most
    # of a second of handoffs and slows every request in flight. SQLAlchemy's
    # "insertmanyvalues" sends such a batch as one multi-row INSERT, one step for sqlite.
    engine.dialect.use_insertmanyvalues_wo_returning = True
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in (
            "journal_mode=WAL",
            "foreign_keys=ON",
            f"busy_timeout={_SQLITE_BUSY_MS}",
            "synchronous=NORMAL",
        ):
            cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # sqlite3's own (legacy) transaction control stays in charge otherwise: it begins
    # lazily at the first write, which waits on busy_timeout instead of failing the
    # way a read transaction upgraded to a write does. Work that must be serialised
    # (migrations, bootstrap) asks for the write lock up front; after this explicit
    # BEGIN, DDL is transactional too, and sqlite3's COMMIT/ROLLBACK end it.
    if conn.get_execution_options().get(_SQLITE_IMMEDIATE):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@functools.cache
def _aware_columns(mapper: Mapper[Any]) -> tuple[str, ...]:
    """Attributes of a mapped class stored as DateTime(timezone=True)."""
    return tuple(
        attr.key
        for attr in mapper.column_attrs
        if isinstance(attr.columns[0].type, DateTime) and attr.columns[0].type.timezone
    )


@event.listens_for(Base, "load", propagate=True)
def _utc_on_load(target: Any, _context: Any) -> None:
    _make_aware(target)


@event.listens_for(Base, "refresh", propagate=True)
def _utc_on_refresh(target: Any, _context: Any, _attrs: Any) -> None:
    _make_aware(target)


def _make_aware(target: Any) -> None:
    # SQLite keeps no offset: its datetimes come back naive, though they were written
    # in UTC. Mark them as such without flagging the row as changed.
    for key in _aware_columns(inspect(target).mapper):
        value = target.__dict__.get(key)
        if isinstance(value, datetime) and value.tzinfo is None:
            set_committed_value(target, key, value.replace(tzinfo=UTC))

