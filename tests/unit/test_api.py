"""The HTTP layer against a fake backend: shapes of responses and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kathan.api import deps
from kathan.app import create_app
from kathan.auth.principal import Principal
from kathan.backends.embeddings import TokenEmbeddings
from kathan.errors import ContextLengthExceededError
from kathan.routing.registry import ModelEntry, ModelRegistry
from kathan.settings import Settings
from tests.fakes import FakeBackend, FakeEmbeddings

KEY = "sk-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def make_client(backend: FakeBackend, **settings: object) -> TestClient:
    registry = ModelRegistry(
        [ModelEntry(id="fake", owned_by="tests", created=123, backend=backend, aliases=("alias",))]
    )
    options = {"accounts": False, **settings}
    app = create_app(Settings(api_keys=[KEY], **options), registry=registry)  # type: ignore[arg-type]
    return TestClient(app)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with make_client(FakeBackend()) as c:
        yield c


def sse_events(text: str) -> list[tuple[str | None, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        event = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        events.append((event, "\n".join(data)))
    return events


def test_completion_shape(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=BODY, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake"
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello!"},
         "finish_reason": "stop", "logprobs": None}
    ]
    assert body["usage"]["prompt_tokens"] == 4
    assert body["usage"]["completion_tokens"] == 2
    assert body["usage"]["total_tokens"] == 6


def test_alias_reports_the_canonical_model(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={**BODY, "model": "alias"}, headers=AUTH)
    assert r.json()["model"] == "fake"


def test_stream_shape(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={**BODY, "stream": True,
                    "stream_options": {"include_usage": True}}, headers=AUTH)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    for c in chunks:
        assert c["object"] == "chat.completion.chunk"
        assert {"id", "created", "model"} <= c.keys()
        assert c["id"] == chunks[0]["id"]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Hello", "!"]
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[3]["choices"][0]["delta"] == {}
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"]["total_tokens"] == 6
    assert len(chunks) == 5


def test_stream_without_include_usage_has_no_usage_chunk(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={**BODY, "stream": True}, headers=AUTH)
    chunks = [json.loads(d) for _, d in sse_events(r.text)[:-1]]
    assert all(c["choices"] for c in chunks)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_bad_key_is_401(client: TestClient, headers: dict[str, str]) -> None:
    r = client.post("/v1/chat/completions", json=BODY, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    body = r.json()
    assert body["detail"] == "Invalid API key"
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "invalid_api_key"


def test_unknown_fields_reach_the_backend_as_extras() -> None:
    backend = FakeBackend()
    with make_client(backend) as c:
        assert c.post("/v1/chat/completions", json={**BODY, "guided_choice": ["a"]},
                      headers=AUTH).status_code == 200
    assert backend.requests[0].model_extra == {"guided_choice": ["a"]}


def test_models_need_a_key(client: TestClient) -> None:
    assert client.get("/v1/models").status_code == 401


@pytest.mark.parametrize(
    ("patch", "loc"),
    [
        ({"temperature": 3}, ["body", "temperature"]),
        ({"top_p": -0.1}, ["body", "top_p"]),
        ({"stop": ["a", "b", "c", "d", "e"]}, ["body", "stop"]),
        ({"messages": []}, ["body", "messages"]),
        ({"messages": [{"role": "robot", "content": "x"}]}, ["body", "messages", 0]),
        ({"messages": [{"role": "tool", "content": "x"}]}, ["body", "messages", 0, "tool", "tool_call_id"]),
        ({"logit_bias": {"abc": 1}}, ["body", "logit_bias"]),
        ({"stop": ""}, ["body", "stop"]),
        ({"presence_penalty": 2.5}, ["body", "presence_penalty"]),
    ],
)
def test_validation_errors_are_422_with_detail_array(
    client: TestClient, patch: dict[str, object], loc: list[object]
) -> None:
    r = client.post("/v1/chat/completions", json={**BODY, **patch}, headers=AUTH)
    assert r.status_code == 422
    body = r.json()
    assert isinstance(body["detail"], list) and body["detail"]
    assert all({"loc", "msg", "type"} <= set(d) for d in body["detail"])
    assert any(d["loc"][: len(loc)] == loc for d in body["detail"]), body["detail"]
    assert body["error"]["type"] == "invalid_request_error"


def test_malformed_json_is_422(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", content=b"{not json", headers={
        **AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"


def test_unknown_model_is_404(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={**BODY, "model": "nope"}, headers=AUTH)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert r.json()["error"]["param"] == "model"
    assert client.get("/v1/models/nope", headers=AUTH).status_code == 404


def test_body_over_limit_is_413() -> None:
    with make_client(FakeBackend(), max_body_bytes=2048) as c:
        big = {**BODY, "messages": [{"role": "user", "content": "x" * 4096}]}
        r = c.post("/v1/chat/completions", json=big, headers=AUTH)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"
        # A body without Content-Length is counted as it arrives.
        r = c.post("/v1/chat/completions", content=iter([b"{" + b" " * 3000 + b"}"]),
                   headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 413


def test_not_ready_is_503_with_retry_after() -> None:
    with make_client(FakeBackend(ready=False)) as c:
        r = c.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "3"
        ready = c.get("/ready")
        assert ready.status_code == 503
        assert "retry-after" in ready.headers
        assert c.get("/health").json() == {"status": "ok"}


def test_error_before_output_keeps_its_status_when_streaming() -> None:
    backend = FakeBackend(error=ContextLengthExceededError("ctx 10 < 20"))
    with make_client(backend) as c:
        r = c.post("/v1/chat/completions", json={**BODY, "stream": True}, headers=AUTH)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "context_length_exceeded"


def test_error_after_headers_is_an_sse_error_event() -> None:
    backend = FakeBackend(fail_after=1, error=ContextLengthExceededError("boom"))
    with make_client(backend) as c:
        r = c.post("/v1/chat/completions", json={**BODY, "stream": True}, headers=AUTH)
        assert r.status_code == 200
        events = sse_events(r.text)
        assert events[-2][0] == "error"
        assert json.loads(events[-2][1])["error"]["message"] == "boom"
        assert events[-1] == (None, "[DONE]")


def test_model_listing(client: TestClient) -> None:
    for path in ("/v1/models", "/v1/chat/models"):
        body = client.get(path, headers=AUTH).json()
        assert body["object"] == "list"
        assert [m["id"] for m in body["data"]] == ["fake", "alias"]
        assert body["data"][0] == {"id": "fake", "object": "model", "created": 123,
                                   "owned_by": "tests", "endpoints": [
                                       "chat/completions", "responses", "messages",
                                       "completions"]}
    assert client.get("/v1/models/alias", headers=AUTH).json()["id"] == "alias"


def test_a_model_lists_completions_and_embeddings_where_it_serves_them() -> None:
    class ChatOnly(FakeBackend):
        serves_raw_prompts = False

    registry = ModelRegistry([
        ModelEntry(id="chat", owned_by="t", created=1, backend=ChatOnly()),
        ModelEntry(id="local", owned_by="t", created=1, backend=FakeBackend(),
                   embeddings=TokenEmbeddings(FakeEmbeddings()))])
    app = create_app(Settings(accounts=False, api_keys=[KEY]), registry=registry)
    with TestClient(app) as c:
        listed = {m["id"]: m["endpoints"] for m in c.get("/v1/models", headers=AUTH).json()[
            "data"]}
    assert listed == {"chat": ["chat/completions", "responses", "messages"],
                      "local": ["chat/completions", "responses", "messages", "completions",
                                "embeddings"]}


def test_unknown_route_is_404_in_kathan_shape(client: TestClient) -> None:
    r = client.get("/v2/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"


def test_a_missing_key_is_401_before_the_body_is_judged(client: TestClient) -> None:
    for content in (b"{not json", json.dumps({"model": "fake"}).encode()):
        r = client.post("/v1/chat/completions", content=content,
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 401, content
        assert r.headers["www-authenticate"] == "Bearer"
    r = client.post("/v1/chat/completions", json=BODY, headers={"Authorization": f"Basic {KEY}"})
    assert r.status_code == 401


def test_an_empty_body_is_422_missing(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", content=b"", headers=AUTH)
    assert r.status_code == 422
    assert r.json()["detail"] == [{"loc": ["body"], "msg": "Field required", "type": "missing"}]


def test_json_is_read_whatever_the_content_type(client: TestClient) -> None:
    # `curl -d '{...}'` sends application/x-www-form-urlencoded unless told otherwise.
    r = client.post("/v1/chat/completions", content=json.dumps(BODY).encode(), headers={
        **AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "Hello!"


def test_model_requests_are_counted_by_endpoint_and_status(client: TestClient) -> None:
    def count(status: str, endpoint: str = "chat/completions") -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(
                    f'kathan_requests_total{{endpoint="{endpoint}",status="{status}"}}'):
                return float(line.split()[-1])
        return 0.0

    before = count("200"), count("401"), count("422")
    client.post("/v1/chat/completions", json=BODY, headers=AUTH)
    client.post("/v1/chat/completions", json={**BODY, "stream": True}, headers=AUTH)
    client.post("/v1/chat/completions", json=BODY)
    client.post("/v1/chat/completions", json={"model": "fake"}, headers=AUTH)
    after = count("200"), count("401"), count("422")
    assert [b - a for a, b in zip(before, after, strict=True)] == [2, 1, 1]
    others = {"responses": {"model": "fake", "input": "hi"},
              "messages": {"model": "fake", "max_tokens": 4,
                           "messages": [{"role": "user", "content": "hi"}]},
              "completions": {"model": "fake", "prompt": "hi"}}
    for endpoint, body in others.items():
        before_one = count("200", endpoint)
        assert client.post(f"/v1/{endpoint}", json=body, headers=AUTH).status_code == 200
        assert count("200", endpoint) == before_one + 1, endpoint


def test_the_chat_route_is_still_described_in_openapi(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/chat/completions"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/ChatCompletionRequest")
    assert {"200", "401", "413", "422", "429", "503"} <= set(operation["responses"])
    assert operation["security"] == [{"HTTPBearer": []}]


def test_a_bug_is_a_500_in_kathans_shape_and_the_server_goes_on() -> None:
    backend = FakeBackend(error=RuntimeError("a bug"))  # type: ignore[arg-type]
    with make_client(backend) as c:
        r = c.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "internal_error"
        assert "a bug" not in r.text  # the cause goes to the log, not to the caller
        assert c.get("/health").status_code == 200


@pytest.mark.parametrize("opentelemetry", [False, True])
def test_chat_answers_alike_whatever_the_opentelemetry_setting(opentelemetry: bool) -> None:
    # One entry path: the chat route is FastAPI's own, with or without tracing.
    with make_client(FakeBackend(), opentelemetry=opentelemetry) as c:
        assert c.post("/v1/chat/completions", json=BODY, headers=AUTH).json()[
            "choices"][0]["message"]["content"] == "Hello!"
        assert c.post("/v1/chat/completions", json=BODY).status_code == 401
        r = c.post("/v1/chat/completions", json={"model": "fake"}, headers=AUTH)
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "messages"]
        assert c.get("/v1/chat/completions", headers=AUTH).status_code == 405


@pytest.mark.parametrize("opentelemetry", [False, True])
def test_the_chat_route_checks_keys_with_the_function_every_route_uses(
    opentelemetry: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A change to the key check reaches chat as it reaches the other routes: both call
    # the one function, whatever the settings.
    seen: list[str] = []
    check = deps._principal

    async def noting(request: Any, credentials: Any, kinds: Any) -> Principal:
        seen.append(request.url.path)
        return await check(request, credentials, kinds)

    monkeypatch.setattr(deps, "_principal", noting)
    with make_client(FakeBackend(), opentelemetry=opentelemetry) as c:
        assert c.post("/v1/chat/completions", json=BODY, headers=AUTH).status_code == 200
        assert c.get("/v1/models", headers=AUTH).status_code == 200
        assert c.post("/v1/chat/completions", json=BODY).status_code == 401
    assert seen == ["/v1/chat/completions", "/v1/models", "/v1/chat/completions"]
