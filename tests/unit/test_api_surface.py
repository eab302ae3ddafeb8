"""Offline /docs and /redoc, and OPTIONS / 405 with every method of the path in Allow."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kathan.app import create_app
from kathan.routing.registry import ModelEntry, ModelRegistry
from kathan.settings import Settings
from tests.fakes import FakeBackend

KEY = "sk-test-key"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    registry = ModelRegistry(
        [ModelEntry(id="fake", owned_by="tests", created=1, backend=FakeBackend())])
    app = create_app(Settings(api_keys=[KEY], accounts=False), registry=registry)
    with TestClient(app) as c:
        yield c


def _references(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', html) + re.findall(r"url: '([^']*)'", html)


@pytest.mark.parametrize(("page", "kinds"), [
    ("/docs", {"text/javascript", "text/css", "image/png", "application/json"}),
    ("/redoc", {"text/javascript", "image/png"}),
])
def test_the_docs_pages_load_everything_from_this_server(
    client: TestClient, page: str, kinds: set[str]
) -> None:
    r = client.get(page)
    assert r.status_code == 200
    html = r.text
    assert "://" not in html, "the page names another host"
    assert "fonts.googleapis" not in html
    refs = _references(html)
    assert refs
    seen = set()
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 1000, ref
        seen.add(asset.headers["content-type"].split(";")[0])
    assert seen >= kinds


def test_the_asset_scripts_are_the_real_libraries(client: TestClient) -> None:
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
    assert "Redoc" in client.get("/docs/assets/redoc.standalone.js").text


def test_an_unknown_asset_is_a_404(client: TestClient) -> None:
    r = client.get("/docs/assets/..%2Fpyproject.toml")
    assert r.status_code == 404
    assert client.get("/docs/assets/nothing.js").status_code == 404


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "some-id", template)


def test_options_lists_every_method_the_schema_declares_on_every_path(
    client: TestClient,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert len(paths) > 5
    for template, operations in paths.items():
        r = client.options(_concrete(template))
        assert r.status_code == 204, template
        allow = [m.strip() for m in r.headers["allow"].split(",")]
        assert set(allow) == {m.upper() for m in operations} | {"OPTIONS"}, template
        assert r.content == b""


@pytest.mark.parametrize(("path", "method", "allowed"), [
    ("/v1/keys", "DELETE", ["GET", "POST", "OPTIONS"]),
    ("/v1/keys", "PATCH", ["GET", "POST", "OPTIONS"]),
    ("/admin/keys/key_1", "PUT", ["PATCH", "DELETE", "OPTIONS"]),
    ("/admin/accounts/acct_1", "POST", ["GET", "PATCH", "OPTIONS"]),
    ("/v1/chat/completions", "GET", ["POST", "OPTIONS"]),
    ("/docs", "POST", ["GET", "OPTIONS"]),
])
def test_a_method_the_path_lacks_is_a_405_naming_all_it_has(
    client: TestClient, path: str, method: str, allowed: list[str]
) -> None:
    r = client.request(method, path, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 405
    assert r.headers["allow"] == ", ".join(allowed)
    error = r.json()["error"]
    assert error["code"] == "method_not_allowed"
    assert error["message"].startswith(f"{method} is not allowed on {path}")
    assert ", ".join(allowed) in error["message"]


def test_options_on_an_unknown_path_is_a_404(client: TestClient) -> None:
    assert client.options("/v1/nothing-here").status_code == 404
