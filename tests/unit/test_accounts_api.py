"""Accounts, keys, limits and the ledger through the HTTP API, on SQLite, with a fake model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kathan.app import create_app
from kathan.errors import ContextLengthExceededError
from kathan.routing.registry import ModelEntry, ModelRegistry
from kathan.settings import Settings
from tests.fakes import FakeBackend

ADMIN = "sk-static-admin"
BODY = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    with client_with(tmp_path, registration="open") as client:
        yield client


@contextmanager
def client_with(tmp_path: Path, **options: Any) -> Iterator[TestClient]:
    backend = FakeBackend()
    registry = ModelRegistry([
        ModelEntry(id="fake", owned_by="tests", created=1, backend=backend, aliases=("alias",)),
        ModelEntry(id="other", owned_by="tests", created=1, backend=FakeBackend()),
        ModelEntry(id="broken", owned_by="tests", created=1, backend=FakeBackend(
            error=ContextLengthExceededError("too long", param="messages"))),
    ])
    settings = Settings(api_keys=[ADMIN], data_dir=tmp_path, ledger_flush_seconds=0.02,
                        key_cache_seconds=60, **options)  # type: ignore[arg-type]
    with TestClient(create_app(settings, registry=registry)) as client:
        yield client


def usage(client: TestClient, token: str, **params: str) -> list[dict[str, Any]]:
    time.sleep(0.1)  # the ledger writes within ledger_flush_seconds
    r = client.get("/v1/usage", headers=bearer(token), params=params)
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["data"]
    return rows


def new_key(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/admin/accounts", headers=bearer(ADMIN),
                    json={"name": f"acct-{time.monotonic_ns()}"})
    assert r.status_code == 201, r.text
    r = client.post("/admin/keys", headers=bearer(ADMIN),
                    json={"account_id": r.json()["id"], "name": "k", **body})
    assert r.status_code == 201, r.text
    key: dict[str, Any] = r.json()
    return key


def test_register_login_and_manage_own_keys(app_client: TestClient) -> None:
    c = app_client
    r = c.post("/v1/auth/register", json={"email": "Ada@Example.com", "password": "correct horse"})
    assert r.status_code == 201 and r.json()["email"] == "ada@example.com"
    assert c.post("/v1/auth/register", json={
        "email": "ada@example.com", "password": "another one"}).status_code == 409
    assert c.post("/v1/auth/login", json={
        "email": "ada@example.com", "password": "wrong password"}).status_code == 401
    r = c.post("/v1/auth/login", json={"email": "ada@example.com", "password": "correct horse"})
    assert r.status_code == 200
    session = r.json()["token"]
    # A login token manages keys but does not call models.
    assert c.post("/v1/chat/completions", json=BODY, headers=bearer(session)).status_code == 401
    r = c.post("/v1/keys", headers=bearer(session), json={"name": "laptop"})
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["key"]
    assert key.startswith(created["prefix"]) and key.startswith("sk-kathan-")
    listed = c.get("/v1/keys", headers=bearer(session)).json()["data"]
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]
    assert c.post("/v1/chat/completions", json=BODY, headers=bearer(key)).status_code == 200
    # The key itself can manage its account's keys too; revoking works at once.
    r = c.delete(f"/v1/keys/{created['id']}", headers=bearer(key))
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert c.post("/v1/chat/completions", json=BODY, headers=bearer(key)).status_code == 401
    # Someone else's key is not found from this account.
    other = new_key(c)
    assert c.delete(f"/v1/keys/{other['id']}", headers=bearer(session)).status_code == 404


def test_admin_api_needs_an_admin(app_client: TestClient) -> None:
    key = new_key(app_client)["key"]
    assert app_client.get("/admin/accounts", headers=bearer(key)).status_code == 403
    assert app_client.get("/admin/accounts").status_code == 401
    assert app_client.get("/admin/accounts", headers=bearer(ADMIN)).status_code == 200


def test_model_allow_list_gives_403(app_client: TestClient) -> None:
    key = new_key(app_client, models=["fake"])["key"]
    ok = app_client.post("/v1/chat/completions", json={**BODY, "model": "alias"},
                         headers=bearer(key))
    assert ok.status_code == 200
    r = app_client.post("/v1/chat/completions", json={**BODY, "model": "other"},
                        headers=bearer(key))
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    listed = app_client.get("/v1/models", headers=bearer(key)).json()["data"]
    assert sorted(m["id"] for m in listed) == ["alias", "fake"]
    assert app_client.get("/v1/models/other", headers=bearer(key)).status_code == 404


def test_rpm_limit_gives_429_naming_the_limit(app_client: TestClient) -> None:
    key = new_key(app_client, limits={"rpm": 2})["key"]
    codes = [app_client.post("/v1/chat/completions", json=BODY, headers=bearer(key))
             for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    refused = codes[2]
    assert int(refused.headers["Retry-After"]) >= 1
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_exceeded" and "rpm" in error["message"]


def test_token_quota_is_counted_from_usage(app_client: TestClient) -> None:
    # Each fake reply uses 4 prompt + 2 completion tokens.
    key = new_key(app_client, limits={"quota_tokens": 10, "quota_period": "day"})["key"]
    codes = [app_client.post("/v1/chat/completions", json=BODY, headers=bearer(key)).status_code
             for _ in range(3)]
    assert codes == [200, 200, 429]


def test_every_request_writes_one_ledger_row(app_client: TestClient) -> None:
    created = new_key(app_client, limits={"rpm": 3})
    key = created["key"]
    c = app_client
    assert c.post("/v1/chat/completions", json=BODY, headers=bearer(key)).status_code == 200
    stream = c.post("/v1/chat/completions", json={**BODY, "stream": True}, headers=bearer(key))
    assert stream.status_code == 200
    assert c.post("/v1/chat/completions", json={**BODY, "model": "broken"},
                  headers=bearer(key)).status_code == 400
    assert c.post("/v1/chat/completions", json=BODY, headers=bearer(key)).status_code == 429
    assert c.post("/v1/chat/completions", json={"model": "fake"},
                  headers=bearer(key)).status_code == 422
    rows = usage(c, key)
    by_model = {r["model"]: r for r in rows}
    fake = by_model["fake"]
    assert fake["requests"] == 4  # two served, one rate-limited, one invalid
    assert (fake["succeeded"], fake["rate_limited"], fake["failed"]) == (2, 1, 1)
    assert fake["prompt_tokens"] == 8 and fake["completion_tokens"] == 4
    assert by_model["broken"]["failed"] == 1
    # The admin sees this account among everyone's.
    everyone = usage(c, ADMIN)
    assert sum(r["requests"] for r in everyone) >= 5


def test_usage_is_scoped_to_the_caller(app_client: TestClient) -> None:
    a, b = new_key(app_client)["key"], new_key(app_client)["key"]
    app_client.post("/v1/chat/completions", json=BODY, headers=bearer(a))
    assert usage(app_client, b) == []
    assert usage(app_client, a)[0]["requests"] == 1


def test_bad_and_expired_keys_are_401(app_client: TestClient) -> None:
    key = new_key(app_client)["key"]
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert app_client.post("/v1/chat/completions", json=BODY,
                           headers=bearer(wrong)).status_code == 401
    r = app_client.post("/admin/keys", headers=bearer(ADMIN), json={
        "account_id": "acct_missing", "name": "x"})
    assert r.status_code == 404
    r = app_client.post("/v1/keys", headers=bearer(key), json={
        "name": "old", "expires_at": "2001-01-01T00:00:00Z"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "expires_at"


def test_store_outage_is_503_not_500(app_client: TestClient) -> None:
    key = new_key(app_client)["key"]
    app_client.app.state.auth.forget(key[:18])  # type: ignore[attr-defined]
    db = app_client.app.state.db  # type: ignore[attr-defined]
    real = db.session

    def broken() -> object:
        from sqlalchemy.exc import OperationalError
        raise OperationalError("SELECT 1", {}, Exception("database is down"))

    db.session = broken
    try:
        r = app_client.post("/v1/chat/completions", json=BODY, headers=bearer(key))
        assert r.status_code == 503 and "Retry-After" in r.headers
        r = app_client.get("/v1/keys", headers=bearer(key))
        assert r.status_code == 503
    finally:
        db.session = real
    assert app_client.post("/v1/chat/completions", json=BODY,
                           headers=bearer(key)).status_code == 200


def test_limits_beyond_the_stores_integers_are_422(app_client: TestClient) -> None:
    r = app_client.post("/admin/accounts", headers=bearer(ADMIN), json={
        "name": "big", "limits": {"max_concurrent": 409120613384536457216}})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][-1] == "max_concurrent"


def test_registration_is_closed_unless_the_operator_opens_it(tmp_path: Path) -> None:
    with client_with(tmp_path) as c:
        r = c.post("/v1/auth/register", json={"email": "eve@example.com",
                                               "password": "correct horse"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "registration_closed"
        assert "/admin/accounts" in r.json()["error"]["message"]
        # Admins still create accounts.
        assert c.post("/admin/accounts", headers=bearer(ADMIN),
                      json={"name": "eve", "email": "eve@example.com",
                            "password": "correct horse"}).status_code == 201


def test_an_open_registration_gives_the_operators_defaults(tmp_path: Path) -> None:
    defaults = {"limits": {"rpm": 5, "quota_tokens": 1000, "quota_period": "day"},
                "models": ["fake"], "max_keys": 2}
    with client_with(tmp_path, registration="open", registrations_per_minute=2,
                     default_account=defaults) as c:
        r = c.post("/v1/auth/register", json={"email": "a@example.com",
                                               "password": "correct horse"})
        assert r.status_code == 201
        assert r.json()["limits"] == {"rpm": 5, "tpm": None, "max_concurrent": None,
                                      "quota_tokens": 1000, "quota_period": "day",
                                      "max_tokens": None}
        token = c.post("/v1/auth/login", json={"email": "a@example.com",
                                               "password": "correct horse"}).json()["token"]
        key = c.post("/v1/keys", headers=bearer(token), json={"name": "one"}).json()
        assert key["models"] == ["fake"] and key["limits"]["rpm"] == 5
        r = c.post("/v1/keys", headers=bearer(token), json={"name": "x", "models": ["other"]})
        assert r.status_code == 403 and r.json()["error"]["param"] == "models"
        assert c.post("/v1/keys", headers=bearer(token), json={"name": "two"}).status_code == 201
        r = c.post("/v1/keys", headers=bearer(token), json={"name": "three"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "too_many_keys"
        # One client address registers at most registrations_per_minute accounts.
        assert c.post("/v1/auth/register", json={
            "email": "b@example.com", "password": "correct horse"}).status_code == 201
        r = c.post("/v1/auth/register", json={"email": "c@example.com",
                                               "password": "correct horse"})
        assert r.status_code == 429 and r.headers["retry-after"].isdigit()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failed_logins_are_refused_for_a_while_and_cost_no_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kathan.auth.throttle import LoginThrottle
    from kathan.store import repo

    with client_with(tmp_path, registration="open") as c:
        clock = Clock()
        c.app.state.login_throttle = LoginThrottle(  # type: ignore[attr-defined]
            failures=5, lockout=60, clock=clock)
        c.post("/v1/auth/register", json={"email": "ada@example.com",
                                           "password": "correct horse"})
        checked = 0
        authenticate = repo.authenticate

        async def counting(*args: Any) -> Any:
            nonlocal checked
            checked += 1
            return await authenticate(*args)

        monkeypatch.setattr(repo, "authenticate", counting)
        wrong = {"email": "ada@example.com", "password": "wrong password"}
        statuses = [c.post("/v1/auth/login", json=wrong).status_code for _ in range(30)]
        assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
        assert checked == 5  # refused attempts never reach the password check
        right = {"email": "ada@example.com", "password": "correct horse"}
        r = c.post("/v1/auth/login", json=right)
        assert r.status_code == 429 and int(r.headers["retry-after"]) == 60
        clock.now += 61  # the wait
        r = c.post("/v1/auth/login", json=right)
        assert r.status_code == 200
        # A success clears the email's count: four more failures are still answered.
        assert [c.post("/v1/auth/login", json=wrong).status_code for _ in range(4)] == [401] * 4


def test_logout_ends_the_session_at_once(app_client: TestClient) -> None:
    c = app_client
    c.post("/v1/auth/register", json={"email": "bo@example.com", "password": "correct horse"})
    token = c.post("/v1/auth/login", json={"email": "bo@example.com",
                                           "password": "correct horse"}).json()["token"]
    assert c.get("/v1/keys", headers=bearer(token)).status_code == 200
    key = c.post("/v1/keys", headers=bearer(token), json={"name": "k"}).json()["key"]
    r = c.post("/v1/auth/logout", headers=bearer(key))  # a key, not a session
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_a_session"
    assert c.post("/v1/auth/logout", headers=bearer(token)).status_code == 204
    assert c.get("/v1/keys", headers=bearer(token)).status_code == 401
    assert c.get("/v1/keys", headers=bearer(key)).status_code == 200  # keys live on


def test_a_keys_max_tokens_caps_each_request(tmp_path: Path) -> None:
    with client_with(tmp_path) as c:
        key = new_key(c, limits={"max_tokens": 50})
        assert key["limits"]["max_tokens"] == 50
        r = c.post("/v1/chat/completions", json={**BODY, "max_tokens": 51},
                   headers=bearer(key["key"]))
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["param"] == "max_tokens" and "51" in error["message"]
        assert "at most 50" in error["message"]
        backend = c.app.state.registry.resolve("fake").backend  # type: ignore[attr-defined]
        assert c.post("/v1/chat/completions", json=BODY,
                      headers=bearer(key["key"])).status_code == 200
        assert backend.requests[-1].max_tokens == 50  # a request that asks none gets the cap
        assert c.post("/v1/chat/completions", json={**BODY, "max_tokens": 20},
                      headers=bearer(key["key"])).status_code == 200
        assert backend.requests[-1].max_tokens == 20


def test_limited_keys_see_their_windows_in_openais_headers(app_client: TestClient) -> None:
    from kathan.service.metering import duration

    key = new_key(app_client, limits={"rpm": 5, "tpm": 1000})["key"]
    r = app_client.post("/v1/chat/completions", json=BODY, headers=bearer(key))
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit-requests"] == "5"
    assert r.headers["x-ratelimit-remaining-requests"] == "4"
    assert r.headers["x-ratelimit-limit-tokens"] == "1000"
    assert r.headers["x-ratelimit-remaining-tokens"] == "1000"
    assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    streamed = app_client.post("/v1/chat/completions", json={**BODY, "stream": True},
                               headers=bearer(key))
    assert streamed.headers["x-ratelimit-remaining-requests"] == "3"
    assert int(streamed.headers["x-ratelimit-remaining-tokens"]) < 1000  # the first one's
    unlimited = new_key(app_client)["key"]
    r = app_client.post("/v1/chat/completions", json=BODY, headers=bearer(unlimited))
    assert not [h for h in r.headers if h.startswith("x-ratelimit")]
    assert [duration(s) for s in (0.25, 1.5, 59.9999, 360)] == ["250ms", "1.5s", "60s", "6m0s"]


def test_a_revoked_key_cannot_be_changed(app_client: TestClient) -> None:
    key = new_key(app_client)
    path = f"/admin/keys/{key['id']}"
    assert app_client.delete(path, headers=bearer(ADMIN)).status_code == 200
    r = app_client.patch(path, headers=bearer(ADMIN), json={"name": "again"})
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("key_revoked", "key_id")
    assert "revoked" in error["message"]
    assert app_client.delete(path, headers=bearer(ADMIN)).status_code == 200  # idempotent
