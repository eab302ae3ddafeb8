"""The console's side of the API: the session cookie, CSRF, the account overview, the
catalog and voices, the console's files and their headers (on SQLite, a fake model)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kathan.auth.browser import COOKIE, csrf_token
from tests.unit.test_accounts_api import ADMIN, BODY, bearer, client_with

PASSWORD = "correct horse battery"


@pytest.fixture
def c(tmp_path: Path) -> Any:
    with client_with(tmp_path, registration="open", login_failure_delay_seconds=0.01) as client:
        yield client


def sign_up(c: TestClient, email: str = "ada@example.com") -> dict[str, Any]:
    r = c.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = c.post("/v1/auth/session", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    session: dict[str, Any] = r.json()
    return session


def test_the_session_cookie_is_httponly_strict_and_holds_no_api_key(c: TestClient) -> None:
    r = c.post("/v1/auth/register", json={"email": "ada@example.com", "password": PASSWORD})
    r = c.post("/v1/auth/session", json={"email": "ada@example.com", "password": PASSWORD})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=ks-")  # a login token, never an API key
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
    assert "secure" not in lowered  # plain http here; https sets Secure
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["account"]["email"] == "ada@example.com"
    assert "token" not in body and body["csrf_token"]
    # A reloaded page gets the same session (and CSRF token) back from the cookie alone.
    again = c.get("/v1/auth/session")
    assert again.status_code == 200
    assert again.json()["csrf_token"] == body["csrf_token"]


def test_cookie_over_https_is_secure(tmp_path: Path) -> None:
    with client_with(tmp_path, registration="open") as client:
        client.base_url = client.base_url.copy_with(scheme="https")  # type: ignore[assignment]
        client.post("/v1/auth/register", json={"email": "s@example.com", "password": PASSWORD})
        r = client.post("/v1/auth/session", json={"email": "s@example.com", "password": PASSWORD})
        assert r.status_code == 200
        assert "secure" in r.headers["set-cookie"].lower()


def test_writes_with_the_cookie_need_the_csrf_token(c: TestClient) -> None:
    session = sign_up(c)
    # Reads need none.
    assert c.get("/v1/keys").status_code == 200
    r = c.post("/v1/keys", json={"name": "no token"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    assert "X-CSRF-Token" in r.json()["error"]["message"]
    r = c.post("/v1/keys", json={"name": "wrong"}, headers={"X-CSRF-Token": "x" * 43})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    # A form post from another origin (what a cross-site page would send).
    r = c.post("/v1/keys", data={"name": "evil"}, headers={
        "X-CSRF-Token": session["csrf_token"], "Origin": "http://evil.example"})
    assert r.status_code == 403 and "evil.example" in r.json()["error"]["message"]
    r = c.post("/v1/keys", json={"name": "mine"}, headers={
        "X-CSRF-Token": session["csrf_token"], "Origin": "http://testserver"})
    assert r.status_code == 201, r.text
    assert [k["name"] for k in c.get("/v1/keys").json()["data"]] == ["mine"]
    # The model API with the cookie is under the same rule.
    r = c.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"


def test_a_bearer_token_needs_no_csrf_token_and_wins_over_the_cookie(c: TestClient) -> None:
    sign_up(c)
    r = c.post("/admin/accounts", headers=bearer(ADMIN), json={"name": "by admin"})
    assert r.status_code == 201  # the admin's bearer key, not the cookie's account


def test_logout_ends_the_session_and_clears_the_cookie(c: TestClient) -> None:
    session = sign_up(c)
    token = c.cookies[COOKIE]
    assert csrf_token(token) == session["csrf_token"]
    assert c.delete("/v1/auth/session").status_code == 403  # no CSRF token
    r = c.delete("/v1/auth/session", headers={"X-CSRF-Token": session["csrf_token"]})
    assert r.status_code == 204
    assert COOKIE not in c.cookies
    c.cookies.set(COOKIE, token)  # a copy of the cookie kept elsewhere is dead too
    assert c.get("/v1/auth/session").status_code == 401


def test_a_session_expires(tmp_path: Path) -> None:
    with client_with(tmp_path, registration="open", session_seconds=60) as client:
        session = sign_up(client)
        expires = session["expires_at"]
        left = (time.mktime(time.strptime(expires[:19], "%Y-%m-%dT%H:%M:%S"))
                - time.mktime(time.gmtime()))
        assert 50 < left <= 61
        assert f"Max-Age=60" in client.post(
            "/v1/auth/session", json={"email": "ada@example.com", "password": PASSWORD}
        ).headers["set-cookie"]


def test_the_playground_is_metered_under_the_accounts_limits(tmp_path: Path) -> None:
    with client_with(tmp_path, registration="open",
                     default_account={"limits": {"rpm": 2, "quota_tokens": 1000,
                                                 "quota_period": "day"}}) as c:
        session = sign_up(c)
        headers = {"X-CSRF-Token": session["csrf_token"]}
        assert c.post("/v1/chat/completions", json=BODY, headers=headers).status_code == 200
        assert c.post("/v1/chat/completions", json=BODY, headers=headers).status_code == 200
        r = c.post("/v1/chat/completions", json=BODY, headers=headers)
        assert r.status_code == 429 and "retry-after" in r.headers
        time.sleep(0.2)  # the ledger writes within ledger_flush_seconds
        rows = c.get("/v1/usage", params={"key_id": "console"}).json()["data"]
        assert sum(r["requests"] for r in rows) == 3
        assert sum(r["rate_limited"] for r in rows) == 1
        assert c.get("/v1/usage").json()["data"] == rows  # the account has no key yet
        overview = c.get("/v1/account").json()
        assert overview["account"]["limits"]["rpm"] == 2
        [quota] = overview["quotas"]
        assert quota["key_id"] is None and quota["quota_tokens"] == 1000
        assert quota["used_tokens"] == sum(r["total_tokens"] for r in rows) > 0


def test_account_overview_lists_each_keys_quota(c: TestClient) -> None:
    session = sign_up(c)
    key = c.post("/v1/keys", json={"name": "k"}, headers={"X-CSRF-Token": session["csrf_token"]})
    key_id = key.json()["id"]
    r = c.patch(f"/admin/keys/{key_id}", headers=bearer(ADMIN),
                json={"limits": {"quota_tokens": 500, "quota_period": "month"}})
    assert r.status_code == 200
    assert c.post("/v1/chat/completions", json=BODY,
                  headers=bearer(key.json()["key"])).status_code == 200
    time.sleep(0.2)
    [quota] = c.get("/v1/account").json()["quotas"]
    assert quota["key_id"] == key_id and quota["quota_period"] == "month"
    assert quota["period_start"].endswith("-01") and quota["used_tokens"] > 0
    [listed] = c.get("/v1/keys").json()["data"]
    assert listed["last_used_at"] is not None


def test_a_non_admin_session_cannot_use_admin_routes(c: TestClient) -> None:
    sign_up(c)
    for path in ("/admin/accounts", "/admin/keys", "/admin/usage"):
        r = c.get(path)
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"


def test_failed_logins_are_slowed_then_refused_with_retry_after(tmp_path: Path) -> None:
    with client_with(tmp_path, registration="open", login_failures=3,
                     login_failure_delay_seconds=0.2) as c:
        c.post("/v1/auth/register", json={"email": "ada@example.com", "password": PASSWORD})
        waited = []
        for _ in range(3):
            started = time.perf_counter()
            r = c.post("/v1/auth/session", json={"email": "ada@example.com",
                                                 "password": "wrong password"})
            waited.append(time.perf_counter() - started)
            assert r.status_code == 401
        assert waited[1] >= 0.4 and waited[2] >= 0.2  # 0.2 s per failure still counted
        r = c.post("/v1/auth/session", json={"email": "ada@example.com", "password": PASSWORD})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_closed_registration_is_said_before_anyone_logs_in(tmp_path: Path) -> None:
    with client_with(tmp_path) as c:
        assert c.get("/v1/auth/config").json() == {"registration": "closed",
                                                   "session_seconds": 86400}
        r = c.post("/v1/auth/register", json={"email": "x@example.com", "password": PASSWORD})
        assert r.status_code == 403 and r.json()["error"]["code"] == "registration_closed"


def test_catalog_and_voices(c: TestClient) -> None:
    sign_up(c)
    data = c.get("/v1/catalog").json()["data"]
    assert [m["id"] for m in data] == ["fake", "other", "broken"]
    assert data[0]["aliases"] == ["alias"] and "chat" in data[0]["capabilities"]
    voices = c.get("/v1/voices").json()
    assert voices["genders"] == ["female", "male"]
    en = next(lang for lang in voices["languages"] if lang["code"] == "en")
    assert en["name"] == "English"
    assert {"name": "british", "locale": "en-GB"} in en["accents"]


def test_the_console_page_and_its_files_carry_a_strict_csp(c: TestClient) -> None:
    r = c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and r.headers["x-frame-options"] == "DENY"
    assert "<script" in r.text and "http://" not in r.text and "https://" not in r.text
    r = c.get("/console/app.js")
    assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
    assert c.get("/console/nope.js").status_code == 404


def test_the_playground_may_use_only_what_the_accounts_keys_may(tmp_path: Path) -> None:
    with client_with(tmp_path, registration="open",
                     default_account={"models": ["alias"]}) as c:
        session = sign_up(c)
        headers = {"X-CSRF-Token": session["csrf_token"]}
        assert c.post("/v1/chat/completions", json=BODY, headers=headers).status_code == 200
        r = c.post("/v1/chat/completions", json={**BODY, "model": "other"}, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["fake", "alias"]
        assert [m["id"] for m in c.get("/v1/catalog").json()["data"]] == ["fake"]
