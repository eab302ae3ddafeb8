"""Hostile bodies at every route that takes one, through the real ASGI app: each gets a
4xx whose message names the problem (and the field, where it lies in one), never a
500; and every route reads a JSON body whatever its content type says.

The routes are found in the app itself, so a new route with a body must be added
to ``BASES`` (the test fails until it is).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kathan.app import create_app
from kathan.backends.embeddings import TokenEmbeddings
from kathan.routing.registry import ModelEntry, ModelRegistry
from kathan.settings import Settings
from tests.fakes import FakeBackend, FakeEmbeddings
from tests.services import create_database, drop_database, require_postgres

ADMIN = "sk-static-admin"
_serial = itertools.count()


def _email() -> str:
    return f"user{next(_serial)}@example.com"


# A valid body for each route with one; the ids in paths are filled in by ``Routes``.
BASES: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
    ("POST", "/v1/chat/completions"): lambda: {
        "model": "fake", "messages": [{"role": "user", "content": "hi"}]},
    ("POST", "/v1/embeddings"): lambda: {"model": "fake", "input": "hi"},
    ("POST", "/v1/completions"): lambda: {"model": "fake", "prompt": "hi"},
    ("POST", "/v1/messages"): lambda: {
        "model": "fake", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    ("POST", "/v1/messages/count_tokens"): lambda: {
        "model": "fake", "messages": [{"role": "user", "content": "hi"}]},
    ("POST", "/v1/responses"): lambda: {"model": "fake", "input": "hi"},
    ("POST", "/v1/auth/register"): lambda: {"email": _email(), "password": "correct horse"},
    ("POST", "/v1/auth/login"): lambda: {"email": "ada@example.com",
                                         "password": "correct horse"},
    ("POST", "/v1/auth/session"): lambda: {"email": "ada@example.com",
                                           "password": "correct horse"},
    ("POST", "/v1/keys"): lambda: {"name": "k"},
    ("POST", "/admin/accounts"): lambda: {"name": "n", "email": _email(),
                                          "password": "correct horse"},
    ("PATCH", "/admin/accounts/{account_id}"): lambda: {"name": "n"},
    ("POST", "/admin/keys"): lambda: {"name": "k", "account_id": Routes.account_id},
    ("PATCH", "/admin/keys/{key_id}"): lambda: {"name": "k"},
}


class Routes:
    """The app, an account with a key (for /v1/keys), and the ids the paths need."""

    account_id = ""
    key_id = ""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        r = client.post("/v1/auth/register", json={
            "email": "ada@example.com", "password": "correct horse"})
        assert r.status_code == 201, r.text
        Routes.account_id = r.json()["id"]
        r = client.post("/admin/keys", headers=_bearer(ADMIN),
                        json={"account_id": Routes.account_id, "name": "own"})
        assert r.status_code == 201, r.text
        Routes.key_id = r.json()["id"]
        self.account_key = r.json()["key"]

    def send(self, method: str, path: str, content: bytes,
             content_type: str | None = "application/json") -> Any:
        token = (self.account_key if path in ("/v1/keys", "/v1/chat/completions",
                                              "/v1/embeddings") else ADMIN)
        headers = _bearer(token)
        if content_type is not None:
            headers["Content-Type"] = content_type
        url = path.format(account_id=Routes.account_id, key_id=Routes.key_id)
        return self.client.request(method, url, content=content, headers=headers)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def routes(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routes]:
    """The app on SQLite and on PostgreSQL (whose text holds no NUL, so the store is
    part of what a hostile value meets)."""
    tmp: Path = tmp_path_factory.mktemp("hostile")
    base = name = None
    url = None
    if request.param == "postgresql":
        base = require_postgres()
        name = f"kathan_test_hostile_{uuid.uuid4().hex[:12]}"
        url = asyncio.run(create_database(base, name))
    registry = ModelRegistry([ModelEntry(id="fake", owned_by="tests", created=1,
                                         backend=FakeBackend(),
                                         embeddings=TokenEmbeddings(FakeEmbeddings()))])
    settings = Settings(api_keys=[ADMIN], data_dir=tmp, registration="open",
                        database_url=url, registrations_per_minute=100_000,
                        login_failures=100_000, login_failure_delay_seconds=0,
                        default_account={"max_keys": 100_000},
                        ledger_flush_seconds=0.02)  # type: ignore[arg-type]
    try:
        with TestClient(create_app(settings, registry=registry),
                        raise_server_exceptions=False) as client:
            yield Routes(client)
    finally:
        if base is not None and name is not None:
            asyncio.run(drop_database(base, name))


def test_every_route_with_a_body_is_covered(routes: Routes) -> None:
    document = routes.client.get("/openapi.json").json()
    found = {(method.upper(), path) for path, operations in document["paths"].items()
             for method, operation in operations.items() if "requestBody" in operation}
    assert found == set(BASES)


def _refused(r: Any, *words: str, param: str | None = None,
             within: str | None = None) -> dict[str, Any]:
    """``r`` is a 422 whose message has ``words``, about ``param`` (or a place ``within``
    a field: ``messages[0]`` is within ``messages``)."""
    if r.request.url.path.startswith("/v1/messages"):
        # Anthropic's dialect: a 400 in its shape, whose message names the field.
        assert r.status_code == 400, (r.status_code, r.text)
        assert r.json()["type"] == "error", r.text
        anthropic: dict[str, Any] = r.json()["error"]
        assert anthropic["type"] == "invalid_request_error", anthropic
        assert all(w in anthropic["message"] for w in words), (words, anthropic)
        named = param if within is None else within
        assert named is None or named in anthropic["message"], (named, anthropic)
        return anthropic
    assert r.status_code == 422, (r.status_code, r.text)
    error: dict[str, Any] = r.json()["error"]
    assert all(w in error["message"] for w in words), (words, error)
    if within is None:
        assert error["param"] == param, error
    else:
        assert error["param"] is not None and error["param"].startswith(within), error
        assert f"'{error['param']}'" in error["message"], error
    assert r.json()["detail"], r.text  # the seeds' detail items stay
    return error


DEEP = b"[" * 1200 + b"]" * 1200

WHOLE_BODIES: list[tuple[bytes, tuple[str, ...]]] = [
    (b"", ("empty",)),
    (b"   \n", ("empty",)),
    (DEEP, ("nested more than 64 levels",)),
    (b"[]", ("must be an object, not an array",)),
    (b"3", ("must be an object, not an integer",)),
    (b'"text"', ("must be an object, not a string",)),
    (b"null", ("must be an object, not null",)),
    (b"\xff\xfe{}", ("not UTF-8", "0xff")),
    (b'{"a": 1, "a": 2}', ("the key 'a' appears twice",)),
    (b"{not json", ("not valid JSON",)),
    (b"model=fake&stream=true", ("not valid JSON",)),
    (b'{"x": 1} trailing', ("not valid JSON",)),
]


@pytest.mark.parametrize(("method", "path"), list(BASES))
@pytest.mark.parametrize(("raw", "words"), WHOLE_BODIES,
                         ids=[repr(raw[:16]) for raw, _ in WHOLE_BODIES])
def test_a_hostile_body_is_a_422_saying_what_is_wrong(
    routes: Routes, method: str, path: str, raw: bytes, words: tuple[str, ...]
) -> None:
    _refused(routes.send(method, path, raw), *words)


# Values no field can hold, as JSON text, and the words of their message.
BAD_VALUES: list[tuple[str, tuple[str, ...]]] = [
    ("NaN", ("NaN is not a JSON value",)),
    ("Infinity", ("Infinity is not a JSON value",)),
    ("-Infinity", ("-Infinity is not a JSON value",)),
    ("1e400", ("out of range",)),
    ("-1e400", ("out of range",)),
    ("1" + "0" * 4300, ("has 4301 digits; at most 4300 are allowed",)),
    ("-" + "9" * 4301, ("has 4301 digits; at most 4300 are allowed",)),
    ('"\\ud800"', ("unpaired surrogate",)),
    ('"ok \\udfff"', ("unpaired surrogate",)),
    ("[" * 100 + "]" * 100, ("nested more than 64 levels",)),
    ('{"k": 1, "k": 1}', ("the key 'k' appears twice",)),
]
_MARK = "\x01hostile\x01"


def _inject(base: dict[str, Any], field: str, value: str) -> bytes:
    return json.dumps({**base, field: _MARK}).replace(json.dumps(_MARK), value).encode()


@pytest.mark.parametrize(("method", "path"), list(BASES))
@pytest.mark.parametrize(("value", "words"), BAD_VALUES, ids=[v[:12] for v, _ in BAD_VALUES])
def test_a_value_no_field_can_hold_is_a_422_naming_the_field(
    routes: Routes, method: str, path: str, value: str, words: tuple[str, ...]
) -> None:
    base = BASES[(method, path)]()
    for field in base:
        _refused(routes.send(method, path, _inject(base, field, value)), *words, within=field)


# Values a field may hold or refuse, but never with a 500: odd Unicode (a NUL is a
# character, which PostgreSQL's text cannot hold), long strings, numbers at the edges,
# values of every JSON type.
ODD_VALUES = [
    json.dumps("\u200fRTL mark\u202e override\u2066isolate"),
    json.dumps("e\u0301\u0301\u0301 combining, \U0001f600 emoji, \ufeff BOM, \u2028 separator"),
    '"\\ud83d\\ude00 an escaped surrogate pair"',
    json.dumps("\x01\x1f\x7f controls"),
    '"a\\u0000b"', '["\\u0000"]', '{"\\u0000": "\\u0000"}',
    json.dumps("x" * 200_000),
    json.dumps(" \t "),
    '""', "-0", "0.0", "-0.0", "1e-400", str(2**63 - 1), str(-(2**63)), "1e308",
    str(2**63), str(-(2**63) - 1), "1" + "0" * 400, "-" + "9" * 4300,
    "true", "false", "null", "[]", "{}", '[{"a": []}]',
]


@pytest.mark.parametrize(("method", "path"), list(BASES))
def test_odd_values_never_give_a_500(routes: Routes, method: str, path: str) -> None:
    base = BASES[(method, path)]()
    for field, value in itertools.product(base, ODD_VALUES):
        r = routes.send(method, path, _inject(BASES[(method, path)](), field, value))
        assert r.status_code < 500, (field, value[:40], r.status_code, r.text)
        if r.status_code >= 400:
            error = r.json()["error"]
            assert error["message"], r.text
            if r.status_code == 422:  # a field's value: the message and param name it
                assert error["param"] is not None and error["param"].startswith(field), (
                    field, value[:40], error)
                assert f"'{error['param']}'" in error["message"], error


@pytest.mark.parametrize(("method", "path"), list(BASES))
@pytest.mark.parametrize("content_type", [
    None, "application/x-www-form-urlencoded", "text/plain", "application/json",
    "application/json; charset=utf-8"])
def test_every_route_reads_json_whatever_the_content_type(
    routes: Routes, method: str, path: str, content_type: str | None
) -> None:
    # `curl -d '{...}'` labels its body a form.
    r = routes.send(method, path, json.dumps(BASES[(method, path)]()).encode(), content_type)
    assert r.status_code in (200, 201), r.text


@pytest.mark.parametrize(("method", "path"), list(BASES))
def test_a_missing_key_is_401_before_the_body_is_judged(
    routes: Routes, method: str, path: str
) -> None:
    if path.startswith("/v1/auth/"):
        return  # these take no key
    url = path.format(account_id=Routes.account_id, key_id=Routes.key_id)
    routes.client.cookies.clear()  # no console session either (/v1/auth/session sets one)
    for raw in (DEEP, b"{not json", b'{"a": NaN}'):
        r = routes.client.request(method, url, content=raw)
        assert r.status_code == 401, (raw[:10], r.text)


def test_strict_types_in_a_chat_request(routes: Routes) -> None:
    base = BASES[("POST", "/v1/chat/completions")]()
    for field, value, words in [
        ("stream", '"yes"', "expected a boolean, but got a string"),
        ("stream", "1", "expected a boolean, but got an integer"),
        ("min_p", "false", "expected a number, but got a boolean"),
        ("temperature", '"1"', "expected a number, but got a string"),
        ("max_tokens", "10.5", "expected an integer, but got a decimal number"),
        ("max_tokens", "true", "expected an integer, but got a boolean"),
        ("logprobs", '"false"', "expected a boolean, but got a string"),
        ("n", '"2"', "expected an integer, but got a string"),
    ]:
        error = _refused(routes.send("POST", "/v1/chat/completions",
                                     _inject(base, field, value)), words, param=field)
        assert error["message"].startswith(f"Invalid type for '{field}'"), error
    # What OpenAI's API takes stays taken: stop as a string or a list, an integer
    # where a number is asked; and 10.0 is an integer, as JSON Schema reads it.
    for field, value in [("stop", '"x"'), ("stop", '["x", "y"]'), ("temperature", "1"),
                         ("stream", "false"), ("max_tokens", "10.0"), ("seed", "-0")]:
        r = routes.send("POST", "/v1/chat/completions", _inject(base, field, value))
        assert r.status_code == 200, (field, value, r.text)


def test_a_large_integer_is_json_a_typed_field_bounds_it(routes: Routes) -> None:
    """An integer past 64 bits is kept as written inside a free-form value, and refused
    by a typed field's bounds, naming it."""
    base = BASES[("POST", "/v1/chat/completions")]()
    big = -717291364943026066319998976
    for field, value, words in [
        ("seed", big, f"'seed' must be at least -9223372036854775808, but got {big}."),
        ("seed", 2**63, f"'seed' must be at most 9223372036854775807, but got {2**63}."),
        ("max_tokens", big, f"'max_tokens' must be at least 1, but got {big}."),
    ]:
        _refused(routes.send("POST", "/v1/chat/completions",
                             _inject(base, field, str(value))), words, param=field)
    schema = {"type": "object", "properties": {"n": {"type": "integer",
                                                      "examples": [big, 10**400]}}}
    backend = routes.client.app.state.registry.resolve("fake").backend  # type: ignore[attr-defined]
    r = routes.client.post("/v1/chat/completions", headers=_bearer(routes.account_key), json={
        **base, "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "n", "schema": schema}}})
    assert r.status_code == 200, r.text
    received = backend.requests[-1].response_format.json_schema.schema_
    assert received == schema


@pytest.mark.parametrize(("patch", "message", "param"), [
    ({"stop": ["a", "b", "c", "d", "e"]}, "'stop' has 5 items; at most 4 are allowed.", "stop"),
    ({"stop": 3}, ("Invalid type for 'stop': expected a string or an array, but got an "
     "integer instead."), "stop"),
    ({"messages": [{"role": "user", "content": None}]}, ("Invalid type for "
     "'messages[0].content': expected a string or an array, but got null instead."),
     "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "Missing required parameter: 'messages[0].content[0].text'.",
     "messages[0].content[0].text"),
    ({"messages": [{"role": "robot", "content": "x"}]}, ("Invalid value for "
     "'messages[0].role': expected one of"), "messages[0].role"),
    ({"messages": [{"role": "tool", "content": "x"}]},
     "Missing required parameter: 'messages[0].tool_call_id'.", "messages[0].tool_call_id"),
    ({"messages": []}, "'messages' has 0 items; at least 1 is required.", "messages"),
    ({"tool_choice": "bogus"}, ("Invalid value for 'tool_choice': expected 'none', 'auto' "
     "or 'required', but got \"bogus\"."), "tool_choice"),
    ({"tool_choice": {"type": "function"}}, ("Missing required parameter: "
     "'tool_choice.function'."), "tool_choice.function"),
    ({"temperature": 3}, "'temperature' must be at most 2, but got 3.", "temperature"),
    ({"logit_bias": {"abc": 1}}, "Invalid value for the key \"abc\" of 'logit_bias'",
     "logit_bias"),
    ({"messages": [{"role": "user", "content": "x", "colour": 1}]},
     "Unrecognized parameter: 'messages[0].colour'.", "messages[0].colour"),
    ({"temperature": 9, "top_p": 9}, ("'temperature' must be at most 2, but got 9. "
     "(1 more problem in `detail`.)"), "temperature"),
])
def test_the_message_names_the_field_and_the_real_reason_first(
    routes: Routes, patch: dict[str, Any], message: str, param: str
) -> None:
    body = {**BASES[("POST", "/v1/chat/completions")](), **patch}
    error = _refused(routes.send("POST", "/v1/chat/completions", json.dumps(body).encode()),
                     message, param=param)
    assert error["message"].startswith(message), error


# Ids and query values reach the store too: a NUL there is no body's, but the same 4xx.
PATH_VALUES = ["a%00b", "%F0%9F%98%80", "%E2%80%8F%E2%80%AE", "x" * 4000, "%FF%FE", "%25"]


@pytest.mark.parametrize("value", PATH_VALUES, ids=[v[:10] for v in PATH_VALUES])
def test_odd_ids_and_query_values_are_4xx_never_500(routes: Routes, value: str) -> None:
    admin = _bearer(ADMIN)
    own = _bearer(routes.account_key)
    for method, url, headers, body in [
        ("GET", f"/admin/accounts/{value}", admin, None),
        ("PATCH", f"/admin/accounts/{value}", admin, {"name": "n"}),
        ("GET", f"/admin/keys/{value}", admin, None),
        ("PATCH", f"/admin/keys/{value}", admin, {"name": "n"}),
        ("DELETE", f"/admin/keys/{value}", admin, None),
        ("DELETE", f"/v1/keys/{value}", own, None),
        ("GET", f"/v1/models/{value}", own, None),
        ("GET", f"/admin/keys?account_id={value}", admin, None),
        ("GET", f"/admin/usage?account_id={value}&key_id={value}", admin, None),
        ("GET", f"/v1/usage?key_id={value}", own, None),
        ("GET", f"/v1/usage?since={value}", own, None),
        ("POST", "/admin/keys", admin, {"name": "k", "account_id": value}),
    ]:
        r = routes.client.request(method, url, headers=headers, json=body)
        assert r.status_code < 500, (method, url[:60], r.status_code, r.text[:300])
        if "?" in url and r.status_code == 200:  # a filter that matches nothing
            assert r.json()["data"] == [], r.text
        else:
            assert 400 <= r.status_code < 500, (method, url[:60], r.status_code, r.text)
            assert r.json()["error"]["message"], r.text
