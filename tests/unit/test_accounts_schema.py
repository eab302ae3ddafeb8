"""The accounts and admin APIs accept exactly what their OpenAPI schema allows, and an
admin cannot give a key models this server does not serve."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from tests.unit.test_accounts_api import ADMIN, bearer, client_with


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp: Path = tmp_path_factory.mktemp("accounts-schema")
    with client_with(tmp) as c:
        yield c


def body_validator(client: TestClient, path: str, method: str) -> jsonschema.Validator:
    document = client.get("/openapi.json").json()
    operation = document["paths"][path][method]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    root = {**schema, "components": document["components"]}
    return jsonschema.Draft202012Validator(root)


def account(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/admin/accounts", headers=bearer(ADMIN), json={"name": "a", **body})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def key(client: TestClient) -> dict[str, Any]:
    r = client.post("/admin/keys", headers=bearer(ADMIN),
                    json={"account_id": account(client)["id"], "name": "k"})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


LIMITS = [
    {"quota_tokens": 5},
    {"quota_period": "day"},
    {"quota_tokens": 5, "quota_period": None},
    {"quota_tokens": 5, "quota_period": "day"},
    {"quota_tokens": None, "quota_period": None},
    {"rpm": True},
    {"rpm": "5"},
    {"rpm": 5.0},
    {"rpm": 0},
    {},
]
NAMES = ["\t", " ", "\u3000", "\u0085", "a\tb", "a\u0000", "\u00a0Ada ", "Ada", "0", "Zoë"]


@pytest.mark.parametrize("body", [
    {"disabled": 0}, {"disabled": "true"}, {"disabled": None}, {"disabled": True},
    *({"name": name} for name in NAMES),
    *({"limits": limits} for limits in LIMITS),
])
def test_account_update_accepts_what_the_schema_allows(
    client: TestClient, body: dict[str, Any]
) -> None:
    allowed = body_validator(client, "/admin/accounts/{account_id}", "patch").is_valid(body)
    target = account(client)["id"]
    r = client.patch(f"/admin/accounts/{target}", headers=bearer(ADMIN), json=body)
    assert (r.status_code == 200) == allowed, (body, r.status_code, r.text)
    if not allowed:
        assert r.status_code == 422
        field = next(iter(body))
        assert r.json()["error"]["param"].startswith(field)


EMAILS = ["ada@example.com", "ada\u0085@example.com", "ada\u00a0@example.com",
          "ada@exa\u2003mple.com", "\ufeffada@example.com", "ada\x1c@example.com",
          "ada@@example.com", " ada@example.com"]


@pytest.mark.parametrize("email", EMAILS)
@pytest.mark.parametrize("is_admin", [False, 0, "false"])
def test_account_create_accepts_what_the_schema_allows(
    client: TestClient, email: str, is_admin: Any
) -> None:
    # A distinct address each time, so that a 409 never stands for an acceptance.
    unique = email.replace("ada", f"ada{EMAILS.index(email)}{type(is_admin).__name__}")
    body = {"name": "n", "email": unique, "is_admin": is_admin}
    allowed = body_validator(client, "/admin/accounts", "post").is_valid(body)
    r = client.post("/admin/accounts", headers=bearer(ADMIN), json=body)
    assert (r.status_code == 201) == allowed, (body, r.status_code, r.text)
    if allowed:
        assert r.json()["email"] == unique.lower()


@pytest.mark.parametrize("models", [[""], ["\t"], [" fake"], ["fake", "alias"], [], None])
def test_key_update_models_follow_the_schema(client: TestClient, models: Any) -> None:
    body = {"models": models}
    allowed = body_validator(client, "/admin/keys/{key_id}", "patch").is_valid(body)
    r = client.patch(f"/admin/keys/{key(client)['id']}", headers=bearer(ADMIN), json=body)
    assert (r.status_code == 200) == allowed, (body, r.status_code, r.text)


@pytest.mark.parametrize("value", [0, "0", "1893456000", "2030-01-01T00:00:00",
                                   "2030-01-01 00:00:00Z", "2030-01-01"])
def test_expires_at_is_an_rfc_3339_time_with_an_offset(client: TestClient, value: Any) -> None:
    r = client.patch(f"/admin/keys/{key(client)['id']}", headers=bearer(ADMIN),
                     json={"expires_at": value})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == "expires_at"
    assert "RFC 3339" in r.json()["error"]["message"]
    r = client.patch(f"/admin/keys/{key(client)['id']}", headers=bearer(ADMIN),
                     json={"expires_at": "2030-01-01T00:00:00+02:00"})
    assert r.status_code == 200 and r.json()["expires_at"].startswith("2029-12-31T22:00:00")


@pytest.mark.parametrize("path", ["/v1/usage", "/admin/usage"])
@pytest.mark.parametrize("param", ["since", "until"])
def test_usage_days_are_dates_not_numbers(client: TestClient, path: str, param: str) -> None:
    for value in ("0", "20260101", "2026-1-1", "2026-02-30"):
        r = client.get(path, headers=bearer(ADMIN), params={param: value})
        assert r.status_code == 422, (value, r.text)
        assert r.json()["error"]["param"].endswith(param)
    r = client.get(path, headers=bearer(ADMIN), params={param: "2026-02-28"})
    assert r.status_code == 200, r.text
    document = client.get("/openapi.json").json()
    [schema] = [p["schema"] for p in document["paths"][path]["get"]["parameters"]
                if p["name"] == param]
    assert {"type": "string", "format": "date"} in schema["anyOf"]


@pytest.mark.parametrize(("method", "path"), [
    ("patch", "/admin/keys/{key_id}"), ("post", "/admin/keys")])
def test_an_admin_cannot_give_a_key_models_the_server_does_not_serve(
    client: TestClient, method: str, path: str
) -> None:
    existing = key(client)
    url = path.format(key_id=existing["id"])
    body: dict[str, Any] = {"models": ["fake", "gpt-4", "gpt-4o"]}
    if method == "post":
        body |= {"account_id": existing["account_id"], "name": "k2"}
    r = client.request(method.upper(), url, headers=bearer(ADMIN), json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "models" and error["code"] == "model_not_found"
    assert "'gpt-4', 'gpt-4o'" in error["message"] and "'fake'" not in error["message"]
    assert "fake (aliases alias)" in error["message"] and "other" in error["message"]
    # Nothing changed; served ids and aliases are taken.
    listed = client.get("/admin/keys", headers=bearer(ADMIN)).json()["data"]
    assert next(k for k in listed if k["id"] == existing["id"])["models"] is None
    body["models"] = ["alias", "other"]
    r = client.request(method.upper(), url, headers=bearer(ADMIN), json=body)
    assert r.status_code in (200, 201), r.text
    assert r.json()["models"] == ["alias", "other"]


def test_logout_with_an_api_key_is_forbidden_not_malformed(client: TestClient) -> None:
    r = client.post("/v1/auth/logout", headers=bearer(key(client)["key"]))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "not_a_session"
