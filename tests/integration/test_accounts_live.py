"""Keys, limits and the ledger on real processes, with the real PostgreSQL and Redis.

- Two replicas share PostgreSQL and Redis: a key with RPM 10 gets exactly 10
  successes across both, and every request has exactly one ledger row.
- kill -9 under load, then a restart: the store is consistent and keys work.
- A graceful shutdown loses no ledger rows.
- Keys are never stored or logged in clear.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import API_KEY, LiveServer, remember_key, start_server, stop_server
from tests.services import create_database, drop_database, require_postgres, require_redis

MODEL = "smollm2-135m-instruct"
SMALL = "local:\n  n_ctx: 512\n  max_running: 4\n"
CHAT = {"model": MODEL, "max_tokens": 2, "temperature": 0,
        "messages": [{"role": "user", "content": "Hi"}]}


def admin(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=60,
                        headers={"Authorization": f"Bearer {API_KEY}"})


def make_key(server: LiveServer, **body: Any) -> dict[str, Any]:
    with admin(server) as c:
        account = c.post("/admin/accounts", json={"name": f"t-{uuid.uuid4().hex[:8]}"})
        assert account.status_code == 201, account.text
        key = c.post("/admin/keys", json={"account_id": account.json()["id"], "name": "k", **body})
        assert key.status_code == 201, key.text
        created: dict[str, Any] = key.json()
        remember_key(created["key"])
        return created


def chat(server: LiveServer, key: str, **extra: Any) -> httpx.Response:
    return httpx.post(f"{server.v1}/chat/completions", json={**CHAT, **extra}, timeout=60,
                      headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    base = require_postgres()
    name = f"kathan_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(base, name)
    yield url
    await drop_database(base, name)


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[tuple[LiveServer, LiveServer]]:
    env = {"KATHAN_DATABASE_URL": postgres_url, "KATHAN_REDIS_URL": require_redis()}
    first = start_server(tmp_path / "a", SMALL, env)
    try:
        second = start_server(tmp_path / "b", SMALL, env)
    except BaseException:
        stop_server(first)
        raise
    yield first, second
    stop_server(first)
    stop_server(second)


async def usage_rows(postgres_url: str, key_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(postgres_url)
    try:
        return list(await conn.fetch("SELECT id, status FROM usage WHERE key_id = $1", key_id))
    finally:
        await conn.close()


async def test_two_replicas_share_one_rpm_limit_and_one_ledger(
    replicas: tuple[LiveServer, LiveServer], postgres_url: str
) -> None:
    first, second = replicas
    key = make_key(first, limits={"rpm": 10})

    async def one(server: LiveServer) -> int:
        async with httpx.AsyncClient(timeout=60) as c:
            r = await c.post(f"{server.v1}/chat/completions", json=CHAT,
                             headers={"Authorization": f"Bearer {key['key']}"})
            return r.status_code

    codes = await asyncio.gather(*(one(replicas[i % 2]) for i in range(30)))
    assert sorted(codes) == [200] * 10 + [429] * 20
    stop_server(first)  # graceful: each replica writes what it buffered
    stop_server(second)
    rows = await usage_rows(postgres_url, key["id"])
    assert len(rows) == 30 and len({r["id"] for r in rows}) == 30
    statuses = sorted(r["status"] for r in rows)
    assert statuses == ["rate_limited"] * 20 + ["succeeded"] * 10


def test_graceful_shutdown_loses_no_ledger_rows(tmp_path: Path) -> None:
    server = start_server(tmp_path, SMALL)
    key = make_key(server)
    for _ in range(12):
        assert chat(server, key["key"]).status_code == 200
    stop_server(server)  # SIGTERM right after the last answer
    db = sqlite3.connect(tmp_path / "data" / "kathan.db")
    count = db.execute("SELECT count(*) FROM usage WHERE key_id = ?", (key["id"],)).fetchone()[0]
    db.close()
    assert count == 12


def kill_9_under_load(tmp_path: Path, env: dict[str, str] | None = None) -> tuple[
        dict[str, Any], list[int]]:
    """Load a server with 4 clients, kill -9 it mid-load, restart it on the same data
    directory and store, make one more request, stop it: the key and the answers."""
    server = start_server(tmp_path, SMALL, env)
    key = make_key(server, limits={"rpm": 1000})
    stop = threading.Event()
    answered: list[int] = []

    def load() -> None:
        while not stop.is_set():
            try:
                answered.append(chat(server, key["key"], max_tokens=8, stream=True).status_code)
            except httpx.HTTPError:
                return

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    while len(answered) < 40:  # several ledger flushes under way
        threading.Event().wait(0.05)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    stop.set()
    for w in workers:
        w.join()
    # Restart on the same data directory: migrations, keys and the ledger are intact.
    restarted = start_server(tmp_path, SMALL, env)
    try:
        assert chat(restarted, key["key"]).status_code == 200
        with admin(restarted) as c:
            assert c.get("/admin/keys").status_code == 200
            report = c.get("/admin/usage").json()["data"]
        assert sum(r["requests"] for r in report) >= 1
    finally:
        stop_server(restarted)
    assert not list((tmp_path / "data" / "journal").glob("*.jsonl"))  # all stored, all gone
    return key, answered


def check_nothing_lost(rows: list[tuple[str, str]], answered: list[int]) -> None:
    """Rows (id, status) of the key after a kill -9 under load and a restart."""
    assert len(rows) == len({r[0] for r in rows})  # no row twice
    assert all(status in ("succeeded", "cancelled", "failed") for _, status in rows)
    assert len(rows) <= len(answered) + 4 + 1
    succeeded = sum(status == "succeeded" for _, status in rows)
    # Every answered request has its row (the journal kept what the kill cut off from
    # the store), plus the one after the restart; a request the kill cut mid-answer may
    # have its row though its client saw no answer (4 clients: at most 4).
    served = answered.count(200) + 1
    assert served <= succeeded <= served + 4, (succeeded, served)


def test_kill_9_under_load_loses_no_ledger_row(tmp_path: Path) -> None:
    key, answered = kill_9_under_load(tmp_path)
    db = sqlite3.connect(tmp_path / "data" / "kathan.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT id, status FROM usage WHERE key_id = ?",
                          (key["id"],)).fetchall()
    finally:
        db.close()
    check_nothing_lost(rows, answered)


async def test_kill_9_under_load_loses_no_ledger_row_on_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"KATHAN_DATABASE_URL": postgres_url, "KATHAN_REDIS_URL": require_redis()}
    key, answered = await asyncio.to_thread(kill_9_under_load, tmp_path, env)
    rows = await usage_rows(postgres_url, key["id"])
    check_nothing_lost([(r["id"], r["status"]) for r in rows], answered)


def test_keys_are_never_stored_or_logged_in_clear(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "KATHAN_DATA_DIR": str(data)}
    made = subprocess.run(
        [sys.executable, "-m", "kathan", "keys", "create", "--name", "cli", "--rpm", "50"],
        capture_output=True, text=True, env=env, timeout=60, check=True)
    cli_key = remember_key(made.stdout.strip().splitlines()[-1])
    assert cli_key.startswith("sk-kathan-")
    server = start_server(tmp_path, SMALL)
    api_key = make_key(server)["key"]
    for key in (cli_key, api_key):
        assert chat(server, key).status_code == 200
        wrong = chat(server, key + "x")
        assert wrong.status_code == 401 and key not in wrong.text
    with httpx.Client(base_url=server.base_url, timeout=30,
                      headers={"Authorization": f"Bearer {api_key}"}) as c:
        assert api_key not in c.get("/v1/keys").text
    stop_server(server)
    stored = b"".join(p.read_bytes() for p in data.iterdir() if p.is_file())
    logged = server.log.read_text() + made.stderr
    for key in (cli_key, api_key):
        assert key.encode() not in stored
        assert key not in logged
        # Not even the secret part after the public prefix.
        assert key[18:].encode() not in stored and key[18:] not in logged


QUOTA = 300


def hang_up_until_refused(server: LiveServer, key: str) -> tuple[int, Any]:
    """Streams through the SDK that read 10 chunks and hang up, until the key is refused:
    how many were admitted, and the refusal."""
    import openai

    admitted = 0
    with openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0) as client:
        for _ in range(30):
            try:
                stream = client.chat.completions.create(
                    model=MODEL, stream=True, max_tokens=200, logit_bias={"2": -100},
                    messages=[{"role": "user", "content": "Tell me a long story."}])
            except openai.RateLimitError as exc:
                return admitted, exc
            admitted += 1
            for i, _chunk in enumerate(stream):
                if i == 9:
                    break
            stream.close()  # the client hangs up mid-stream
    return admitted, None


def check_charged(rows: list[tuple[str, int, int, int]], admitted: int, refused: Any) -> None:
    """Rows (status, http_status, prompt_tokens, completion_tokens) of the key above."""
    assert refused is not None, "the quota was never reached"
    assert refused.response.headers["retry-after"].isdigit()
    cut = [r for r in rows if r[0] == "cancelled"]
    assert len(cut) == admitted and all(r[1] == 499 for r in cut)
    # Each was charged its prompt and at least the chunks the client read.
    assert all(p > 0 and c >= 8 for _, _, p, c in cut), cut
    charged = [p + c for _, _, p, c in cut]
    # The quota is checked before each admission against the tokens of the requests that
    # ended: it goes over by at most the requests in flight when it was crossed. A client
    # that hangs up and asks again at once has two (the server may see the next request
    # before the hang-up), so at most two requests' tokens here.
    assert sum(charged) - 2 * max(charged) < QUOTA <= sum(charged)
    assert [r[0] for r in rows].count("rate_limited") == 1


def test_interrupted_streams_are_charged_and_exhaust_a_quota(tmp_path: Path) -> None:
    # Clients that read a few chunks and hang up pay for what was generated: the prompt
    # and the tokens produced count against the key's quota and are in the ledger.
    server = start_server(tmp_path, SMALL)
    key = make_key(server, limits={"quota_tokens": QUOTA, "quota_period": "day"})
    admitted, refused = hang_up_until_refused(server, key["key"])
    stop_server(server)  # graceful: every ledger row is written
    db = sqlite3.connect(tmp_path / "data" / "kathan.db")
    rows = db.execute("SELECT status, http_status, prompt_tokens, completion_tokens "
                      "FROM usage WHERE key_id = ?", (key["id"],)).fetchall()
    db.close()
    check_charged(rows, admitted, refused)


async def test_interrupted_streams_are_charged_on_postgres_and_redis(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"KATHAN_DATABASE_URL": postgres_url, "KATHAN_REDIS_URL": require_redis()}
    server = start_server(tmp_path, SMALL, env)
    try:
        key = make_key(server, limits={"quota_tokens": QUOTA, "quota_period": "day"})
        admitted, refused = await asyncio.to_thread(hang_up_until_refused, server, key["key"])
    finally:
        stop_server(server)
    conn = await asyncpg.connect(postgres_url)
    try:
        found = await conn.fetch("SELECT status, http_status, prompt_tokens, completion_tokens "
                                 "FROM usage WHERE key_id = $1", key["id"])
    finally:
        await conn.close()
    check_charged([tuple(r) for r in found], admitted, refused)


def test_the_bootstrap_admin_key_goes_to_a_private_file_not_the_log(tmp_path: Path) -> None:
    server = start_server(tmp_path, SMALL)  # an empty store: the admin is created
    try:
        secret = tmp_path / "data" / "admin-key.txt"
        key = remember_key(secret.read_text().strip())
        assert key.startswith("sk-kathan-")
        assert secret.stat().st_mode & 0o777 == 0o600
        with httpx.Client(base_url=server.base_url, timeout=30,
                          headers={"Authorization": f"Bearer {key}"}) as c:
            assert c.get("/admin/accounts").status_code == 200
    finally:
        stop_server(server)
    logged = server.log.read_text()
    assert str(secret) in logged
    assert key not in logged and key[18:] not in logged


def test_a_client_that_hangs_up_mid_stream_cannot_exceed_tpm(tmp_path: Path) -> None:
    server = start_server(tmp_path, SMALL)
    try:
        key = make_key(server, limits={"tpm": QUOTA})
        admitted, refused = hang_up_until_refused(server, key["key"])
    finally:
        stop_server(server)
    assert refused is not None and "(tpm)" in str(refused), refused
    db = sqlite3.connect(tmp_path / "data" / "kathan.db")
    rows = db.execute("SELECT status, http_status, prompt_tokens, completion_tokens "
                      "FROM usage WHERE key_id = ?", (key["id"],)).fetchall()
    db.close()
    check_charged(rows, admitted, refused)  # the window holds what they consumed
