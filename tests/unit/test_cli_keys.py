"""`kathan db upgrade` and `kathan keys ...` against a SQLite file (and PostgreSQL once)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from kathan.cli import main
from kathan.store import repo
from kathan.store.db import alembic_config
from tests.services import create_database, drop_database, require_postgres


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every command uses a fresh SQLite file in a temporary data directory."""
    for name in ("KATHAN_DATABASE_URL", "KATHAN_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KATHAN_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def create(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    status, out, err = run(capsys, "keys", "create", *argv)
    assert status == 0, err
    [token] = out.splitlines()  # the key, alone on stdout
    assert repo.is_key_token(token)
    return token


def test_db_upgrade_prints_where_the_database_is(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    status, out, _ = run(capsys, "db", "upgrade")
    assert status == 0
    newest = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert f"sqlite+aiosqlite:///{data_dir.resolve()}/kathan.db is at revision {newest}" in out
    assert (data_dir / "kathan.db").exists()
    assert run(capsys, "db", "upgrade")[0] == 0


def test_a_created_key_is_listed_only_by_its_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    token = create(
        capsys, "--name", "laptop", "--models", "m1, m2", "--rpm", "60", "--tpm", "5000",
        "--max-concurrent", "2", "--quota-tokens", "100000/day", "--expires", "2099-01-31",
    )
    status, out, err = run(capsys, "keys", "list")
    assert status == 0, err
    header, row = out.splitlines()
    assert header.split()[:3] == ["ID", "PREFIX", "NAME"]
    assert token not in out and token[18:] not in out
    assert f"{token[:18]}…" in row
    for cell in ("laptop", "default", "m1,m2", "rpm=60 tpm=5000 concurrent=2 quota=100000/day",
                 "2099-01-31 00:00"):
        assert cell in row


def test_the_summary_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "keys", "create", "--name", "ci")
    assert status == 0
    assert out.count("\n") == 1
    assert "Created key key_" in err and "'default'" in err and out.strip() not in err


def test_keys_are_revoked_by_id_prefix_or_whole_key(capsys: pytest.CaptureFixture[str]) -> None:
    tokens = [create(capsys, "--name", f"k{n}") for n in range(3)]
    key_id = run(capsys, "keys", "list")[1].splitlines()[1].split()[0]
    assert run(capsys, "keys", "revoke", key_id)[0] == 0
    status, out, _ = run(capsys, "keys", "revoke", tokens[1][:18])
    assert status == 0 and "Revoked" in out
    status, out, _ = run(capsys, "keys", "revoke", tokens[2])
    assert status == 0 and tokens[2] not in out
    status, out, _ = run(capsys, "keys", "revoke", tokens[2][:18] + "…")
    assert status == 0 and "already revoked" in out
    status, out, _ = run(capsys, "keys", "list", "--active")
    assert out.splitlines()[1:] == []
    listed = run(capsys, "keys", "list")[1].splitlines()[1:]
    assert len(listed) == 3 and all(line.split()[-1] != "-" for line in listed)


def test_revoking_an_unknown_key_fails_without_echoing_a_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = repo.new_key_token()
    status, _, err = run(capsys, "keys", "revoke", missing)
    assert status == 1 and "no key" in err
    assert missing not in err and missing[:18] in err
    assert run(capsys, "keys", "revoke", "key_nope")[0] == 1


def test_accounts_are_found_or_created(capsys: pytest.CaptureFixture[str]) -> None:
    create(capsys, "--name", "a", "--account", "bob", "--admin")
    create(capsys, "--name", "b", "--account", "bob")
    create(capsys, "--name", "c", "--account", "carol")
    status, _, err = run(capsys, "keys", "create", "--name", "d", "--account", "carol", "--admin")
    assert status == 2 and "not an admin" in err
    status, out, _ = run(capsys, "keys", "list", "--account", "bob")
    assert [line.split()[2] for line in out.splitlines()[1:]] == ["a", "b"]
    status, _, err = run(capsys, "keys", "list", "--account", "nobody")
    assert status == 1 and "no account" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rpm", "0"], "--rpm: expected a whole number"),
        (["--tpm", "many"], "--tpm: expected a whole number"),
        (["--quota-tokens", "100/week"], "expected N/day or N/month"),
        (["--quota-tokens", "x/day"], "--quota-tokens: expected a whole number"),
        (["--expires", "2001-01-01"], "is in the past"),
        (["--expires", "next week"], "expected YYYY-MM-DD"),
        (["--models", " , "], "expected model ids"),
        (["--account", " "], "must not be empty"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create", "--name", "k", *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_name_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create"])
    assert exited.value.code == 2 and "--name" in capsys.readouterr().err
    status, _, err = run(capsys, "keys", "create", "--name", "x" * 201)
    assert status == 2 and "name is longer than 200" in err


def test_the_installed_command_prints_only_the_key(data_dir: Path) -> None:
    env = {**os.environ, "KATHAN_DATA_DIR": str(data_dir)}
    created = subprocess.run(
        [sys.executable, "-m", "kathan", "keys", "create", "--name", "script"],
        capture_output=True, text=True, env=env, check=True,
    )
    token = created.stdout.strip()
    assert created.stdout == token + "\n" and repo.is_key_token(token)
    listed = subprocess.run(
        [sys.executable, "-m", "kathan", "keys", "list"],
        capture_output=True, text=True, env=env, check=True,
    )
    assert token[:18] in listed.stdout and token not in listed.stdout


def test_postgresql_urls_are_shown_without_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = require_postgres()
    name = f"kathan_test_cli_{uuid.uuid4().hex[:12]}"
    url = asyncio.run(create_database(base, name))
    try:
        # Trust authentication ignores the password; it must still never be printed.
        monkeypatch.setenv("KATHAN_DATABASE_URL", url.replace("://postgres@", "://postgres:pw1@"))
        status, out, _ = run(capsys, "db", "upgrade")
        assert status == 0 and "postgresql+asyncpg://postgres:***@" in out and "pw1" not in out
        token = create(capsys, "--name", "pg")
        assert token[:18] in run(capsys, "keys", "list")[1]
    finally:
        asyncio.run(drop_database(base, name))


def test_serve_tunes_the_collector_for_a_long_lived_process() -> None:
    import gc

    from kathan.cli import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold()[0] == 7000
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_accounts_create_makes_an_account_its_holder_logs_into(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse\n"))
    status, out, err = run(capsys, "accounts", "create", "--name", "Ada",
                           "--email", "ada@example.com")
    assert status == 0, err
    [account_id] = out.splitlines()
    assert account_id.startswith("acct_") and "ada@example.com" in err

    async def login() -> str | None:
        from kathan.settings import Settings
        from kathan.store.db import Database, resolve_url

        db = Database(resolve_url(Settings()))
        try:
            async with db.session() as s:
                account = await repo.authenticate(s, "ada@example.com", "correct horse")
                return None if account is None else account.id
        finally:
            await db.dispose()

    assert asyncio.run(login()) == account_id
    # The same email twice is refused, with the reason.
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse\n"))
    status, _, err = run(capsys, "accounts", "create", "--name", "Ada 2",
                         "--email", "ada@example.com")
    assert status != 0 and "already exists" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    status, _, err = run(capsys, "accounts", "create", "--name", "B", "--email", "b@example.com")
    assert status == 2 and "8 characters" in err
