"""`kathan accounts list|disable|enable`, `kathan usage`, `kathan models`, `kathan config
check` and the revoke note, against a SQLite store in a temporary data directory."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kathan.cli import main
from kathan.settings import Settings
from kathan.store import repo
from kathan.store.db import Database, resolve_url


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("KATHAN_DATABASE_URL", "KATHAN_CONFIG_FILE", "KATHAN_KEY_CACHE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KATHAN_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def create_key(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    status, out, err = run(capsys, "keys", "create", *argv)
    assert status == 0, err
    return out.strip()


def table(out: str) -> list[dict[str, str]]:
    """Rows of a printed table, by header: each cell starts where its header does."""
    import re

    lines = out.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    names = lines[0].split()
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{name: line[a:b].strip() for name, (a, b) in zip(names, bounds, strict=True)}
            for line in lines[1:]]


def test_accounts_are_listed_disabled_and_enabled(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_key(capsys, "--name", "a", "--account", "acme", "--rpm", "60")
    create_key(capsys, "--name", "b", "--account", "acme")
    token = create_key(capsys, "--name", "c", "--account", "other")
    assert run(capsys, "keys", "revoke", token)[0] == 0
    status, out, _ = run(capsys, "accounts", "list")
    assert status == 0
    rows = {row["NAME"]: row for row in table(out)}
    assert set(rows) == {"acme", "other"}
    assert rows["acme"]["KEYS"] == "2" and rows["other"]["KEYS"] == "0"
    assert rows["acme"]["DISABLED"] == "no" and rows["acme"]["ADMIN"] == "no"

    monkeypatch.setenv("KATHAN_KEY_CACHE_SECONDS", "3")
    status, out, err = run(capsys, "accounts", "disable", "acme")
    assert status == 0 and "is disabled" in out
    assert "3 s (key_cache_seconds)" in err
    assert table(run(capsys, "accounts", "list")[1])[0]["DISABLED"] == "yes"
    assert "already disabled" in run(capsys, "accounts", "disable", rows["acme"]["ID"])[1]

    async def disabled() -> bool:
        db = Database(resolve_url(Settings()))
        try:
            async with db.session() as s:
                account = await repo.get_account(s, rows["acme"]["ID"])
                assert account is not None
                return account.disabled
        finally:
            await db.dispose()

    assert asyncio.run(disabled()) is True
    status, out, _ = run(capsys, "accounts", "enable", "acme")
    assert status == 0 and "is enabled" in out
    assert asyncio.run(disabled()) is False
    status, _, err = run(capsys, "accounts", "disable", "nobody")
    assert status == 1 and "no account" in err


def test_revoke_says_when_a_running_server_stops_accepting_the_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = create_key(capsys, "--name", "k")
    status, out, err = run(capsys, "keys", "revoke", token)
    assert status == 0 and "Revoked" in out
    assert "up to 10 s more" in err and "key_cache_seconds" in err
    monkeypatch.setenv("KATHAN_KEY_CACHE_SECONDS", "2.5")
    token = create_key(capsys, "--name", "k2")
    assert "up to 2.5 s more" in run(capsys, "keys", "revoke", token)[2]


def _usage_row(n: int, *, day: str, model: str, account: str, key: str, status: str,
               prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "id": f"req_{n}", "created_at": datetime.fromisoformat(f"{day}T12:00:00+00:00"),
        "account_id": account, "key_id": key, "key_prefix": None, "model": model,
        "status": status, "http_status": 200 if status == "succeeded" else 500,
        "streamed": False, "prompt_tokens": prompt, "cached_tokens": cached,
        "completion_tokens": completion, "latency_ms": 5.0,
    }


def test_usage_reports_by_day_and_model_for_an_account_or_a_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    create_key(capsys, "--name", "a1", "--account", "acme")
    create_key(capsys, "--name", "a2", "--account", "acme")
    create_key(capsys, "--name", "o1", "--account", "other")
    keys = {row["NAME"]: row for row in table(run(capsys, "keys", "list")[1])}
    accounts = {row["NAME"]: row["ID"] for row in table(run(capsys, "accounts", "list")[1])}
    acme, other = accounts["acme"], accounts["other"]
    a1, a2, o1 = keys["a1"]["ID"], keys["a2"]["ID"], keys["o1"]["ID"]
    rows = [
        _usage_row(1, day="2026-11-01", model="m1", account=acme, key=a1, status="succeeded",
                   prompt=10, completion=5, cached=4),
        _usage_row(2, day="2026-11-01", model="m1", account=acme, key=a2, status="failed",
                   prompt=7, completion=0),
        _usage_row(3, day="2026-11-02", model="m2", account=acme, key=a1, status="succeeded",
                   prompt=3, completion=30),
        _usage_row(4, day="2026-11-02", model="m1", account=other, key=o1, status="succeeded",
                   prompt=100, completion=100),
        _usage_row(5, day="2026-10-31", model="m1", account=acme, key=a1, status="cancelled",
                   prompt=1, completion=1),
    ]

    async def insert() -> None:
        db = Database(resolve_url(Settings()))
        try:
            async with db.session() as s:
                await repo.insert_usage(s, rows)
                await s.commit()
        finally:
            await db.dispose()

    asyncio.run(insert())
    status, out, err = run(capsys, "usage", "--account", "acme", "--since", "2026-11-01")
    assert status == 0, err
    report = table(out)
    assert [(r["DAY"], r["MODEL"]) for r in report] == [
        ("2026-11-01", "m1"), ("2026-11-02", "m2"), ("total", "")]
    first = report[0]
    assert (first["REQUESTS"], first["OK"], first["FAILED"]) == ("2", "1", "1")
    assert (first["PROMPT"], first["CACHED"], first["COMPLETION"], first["TOTAL"]) == (
        "17", "4", "5", "22")
    total = report[-1]
    assert total["REQUESTS"] == "3" and total["TOTAL"] == str(17 + 5 + 3 + 30)

    status, out, _ = run(capsys, "usage", "--key", a1, "--json")
    data = json.loads(out)["data"]
    assert [(d["day"], d["model"], d["requests"], d["cancelled"], d["total_tokens"])
            for d in data] == [("2026-10-31", "m1", 1, 1, 2), ("2026-11-01", "m1", 1, 0, 15),
                               ("2026-11-02", "m2", 1, 0, 33)]
    status, out, _ = run(capsys, "usage", "--until", "2026-10-31")
    assert [r["DAY"] for r in table(out)] == ["2026-10-31", "total"]
    status, out, _ = run(capsys, "usage", "--since", "2027-01-01")
    assert status == 0 and table(out) == []
    status, _, err = run(capsys, "usage", "--account", "nobody")
    assert status == 1 and "no account" in err
    with pytest.raises(SystemExit) as exited:
        main(["usage", "--since", "yesterday"])
    assert exited.value.code == 2 and "YYYY-MM-DD" in capsys.readouterr().err


class _Upstream(BaseHTTPRequestHandler):
    """A models listing that answers 200 to the key "good" and 401 to any other."""

    def do_GET(self) -> None:
        good = self.headers.get("Authorization") == "Bearer good"
        body = b'{"object": "list", "data": []}' if good else b'{"error": {}}'
        self.send_response(200 if good and self.path == "/v1/models" else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_models_shows_each_deployment_and_probes_upstreams(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    upstream: str,
) -> None:
    import socket

    monkeypatch.setenv("TEST_GOOD_KEY", "good")
    monkeypatch.setenv("TEST_BAD_KEY", "bad")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        config = tmp_path / "kathan.yaml"
        config.write_text(f"""
models:
  - id: gpt-4o
    aliases: [gpt-4, openai/gpt-4o]
    deployments:
      - {{backend: openai, base_url: "{upstream}", api_key_env: TEST_GOOD_KEY, model: real-4o}}
      - {{backend: openai, base_url: "{upstream}", api_key_env: TEST_BAD_KEY}}
      - {{backend: openai, base_url: "{dead}"}}
  - id: small
    deployments: [{{backend: local}}]
""")
        status, out, err = run(capsys, "models", "--config", str(config))
        assert status == 0, err
        rows = table(out)
        assert rows[0]["MODEL"] == "smollm2-135m-instruct" and "file found" in rows[0]["STATUS"]
        gpt = [r for r in rows if r["DEPLOYMENT"].startswith("gpt-4o#")]
        assert gpt[0]["MODEL"] == "gpt-4o" and gpt[0]["ALIASES"] == "gpt-4,openai/gpt-4o"
        assert gpt[0]["WHERE"] == f"{upstream} (real-4o)"
        assert gpt[1]["WHERE"] == f"{upstream} (gpt-4o)"
        assert [r["STATUS"] for r in gpt] == [
            "key from $TEST_GOOD_KEY", "key from $TEST_BAD_KEY", "no key needed"]
        assert "local engine (smollm2-135m-instruct)" in out

        status, out, err = run(capsys, "models", "--config", str(config), "--probe")
        assert status == 1, err  # one deployment does not answer
        probed = {r["DEPLOYMENT"]: r["STATUS"] for r in table(out) if r.get("DEPLOYMENT")}
        assert probed["gpt-4o#0"].endswith("answers (HTTP 200)")
        assert probed["gpt-4o#1"].endswith("the key is refused (HTTP 401)")
        assert "unreachable" in probed["gpt-4o#2"]

    config.write_text(f"""
local: null
models:
  - id: gpt-4o
    deployments:
      - {{backend: openai, base_url: "{upstream}", api_key_env: TEST_GOOD_KEY}}
""")
    status, out, _ = run(capsys, "models", "--config", str(config), "--probe")
    assert status == 0 and "answers (HTTP 200)" in out and "smollm2" not in out


def test_config_check_lists_the_models_a_valid_file_would_serve(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_UNSET_KEY_VAR", raising=False)
    config = tmp_path / "kathan.yaml"
    config.write_text("""
local:
  id: tiny
  aliases: [default, fast]
models:
  - id: claude-3-5-sonnet
    aliases: [anthropic/claude-3-5-sonnet]
    deployments:
      - {backend: anthropic, base_url: "http://127.0.0.1:9"}
""")
    status, out, err = run(capsys, "config", "check", str(config))
    assert status == 0, err
    assert out.splitlines()[0] == f"{config} is valid: it would serve 2 models."
    rows = table("\n".join(out.splitlines()[1:]))
    assert [(r["MODEL"], r["ALIASES"]) for r in rows] == [
        ("tiny", "default,fast"), ("claude-3-5-sonnet", "anthropic/claude-3-5-sonnet")]
    # A deployment that waits for its key (if_key_set) is listed, and its model is not served.
    with config.open("a") as more:
        more.write("""
  - id: gpt-4
    deployments:
      - {backend: openai, base_url: "http://127.0.0.1:9/v1", api_key_env: TEST_UNSET_KEY_VAR,
         if_key_set: true}
""")
    status, out, err = run(capsys, "config", "check", str(config))
    assert status == 0, err
    assert out.splitlines()[0] == f"{config} is valid: it would serve 2 models."
    [row] = [r for r in table("\n".join(out.splitlines()[1:])) if r["DEPLOYMENT"] == "gpt-4#0"]
    assert row["MODEL"] == "gpt-4 (not served)"
    assert row["STATUS"] == "$TEST_UNSET_KEY_VAR is not set: left out (if_key_set)"
    config.write_text("local:\n  id: tiny\n  aliases: [x]\nmodels:\n  - id: x\n"
                      "    deployments: [{backend: local}]\n")
    status, _, err = run(capsys, "config", "check", str(config))
    assert status == 1
    assert err == (f"kathan: {config}: model name 'x' is configured twice: local model tiny "
                   "(alias) and model x (id); each id and alias names one model\n")
