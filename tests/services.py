"""The machine's real PostgreSQL and Redis, for the tests that need them.

They are on their standard ports (5432, 6379). When one is absent, its tests
skip with the reason, unless ``CI`` is set: in CI they must run, so they fail.
"""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_HOST = os.environ.get("KATHAN_TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("KATHAN_TEST_POSTGRES_PORT", "5432"))
POSTGRES_USER = os.environ.get("KATHAN_TEST_POSTGRES_USER", "postgres")
REDIS_URL = os.environ.get("KATHAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _absent(what: str) -> None:
    message = f"{what} is not reachable"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI is set: these tests must run in CI")
    pytest.skip(f"{message} (set CI to make this a failure)")


def require_postgres() -> str:
    """Base URL of the server (no database), or skip/fail when it is absent."""
    if not _reachable(POSTGRES_HOST, POSTGRES_PORT):
        _absent(f"PostgreSQL at {POSTGRES_HOST}:{POSTGRES_PORT}")
    return f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}"


def require_redis() -> str:
    """The Redis URL, or skip/fail when it is absent."""
    rest = REDIS_URL.split("://", 1)[1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    if not _reachable(host or "127.0.0.1", int(port or 6379)):
        _absent(f"Redis at {REDIS_URL}")
    return REDIS_URL


async def create_database(base_url: str, name: str) -> str:
    """Create a fresh PostgreSQL database and return its URL."""
    import asyncpg

    conn = await asyncpg.connect(f"{base_url}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{base_url}/{name}"


async def drop_database(base_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{base_url}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
