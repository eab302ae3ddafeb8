"""``POST /v1/embeddings`` through the real app, with a fake at the local model's seam
(``tests.fakes.FakeEmbeddings`` under ``TokenEmbeddings``: one token per character,
context 64, vocabulary 1000): request shapes, validation, base64, batching, refusals and the ledger row."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from kathan.app import create_app
from kathan.auth.principal import Principal
from kathan.backends.embeddings import TokenEmbeddings
from kathan.limits.base import Lease, Limits
from kathan.limits.memory import MemoryLimiter
from kathan.routing.registry import ModelEntry, ModelRegistry
from kathan.service.metering import Metering
from kathan.settings import Settings
from kathan.store.ledger import UsageRow
from tests.fakes import FakeBackend, FakeEmbeddings

KEY = "sk-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@dataclass
class Ledger:
    rows: list[UsageRow] = field(default_factory=list)

    def record(self, row: UsageRow) -> None:
        self.rows.append(row)


class CountingLimiter(MemoryLimiter):
    """The real in-memory limiter, noting the tokens of each lease given back."""

    def __init__(self) -> None:
        super().__init__()
        self.released: list[int] = []

    async def release(self, lease: Lease, tokens: int, *, now: float | None = None) -> None:
        self.released.append(tokens)
        await super().release(lease, tokens, now=now)


class OneKey:
    """The authenticator seam: every bearer token is ``principal``."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    async def verify(self, token: str, allow: object = None) -> Principal:
        return self.principal


@dataclass
class World:
    client: TestClient
    embeddings: FakeEmbeddings
    ledger: Ledger
    limiter: CountingLimiter

    def post(self, body: dict[str, Any]) -> Any:
        return self.client.post("/v1/embeddings", json=body, headers=AUTH)


def _world(embeddings: FakeEmbeddings, principal: Principal | None = None) -> Iterator[World]:
    registry = ModelRegistry([
        ModelEntry(id="fake", owned_by="tests", created=1, backend=FakeBackend(),
                   aliases=("alias",), embeddings=TokenEmbeddings(embeddings)),
        ModelEntry(id="chat-only", owned_by="tests", created=1, backend=FakeBackend()),
        ModelEntry(id="other", owned_by="tests", created=1, backend=FakeBackend(),
                   embeddings=TokenEmbeddings(FakeEmbeddings())),
    ])
    app = create_app(Settings(api_keys=[KEY], accounts=False), registry=registry)
    ledger, limiter = Ledger(), CountingLimiter()
    with TestClient(app) as client:
        if principal is not None:
            app.state.metering = Metering(limiter, ledger, None)  # type: ignore[arg-type]
            app.state.auth = OneKey(principal)
        yield World(client, embeddings, ledger, limiter)


@pytest.fixture
def world() -> Iterator[World]:
    yield from _world(FakeEmbeddings())


STORED_KEY = Principal(kind="key", is_admin=False, account_id="acct", key_id="key1",
                       key_prefix="sk-k", models=frozenset({"fake"}),
                       limits=Limits(max_concurrent=4))


@pytest.fixture
def metered() -> Iterator[World]:
    yield from _world(FakeEmbeddings(), STORED_KEY)


def _vectors(body: dict[str, Any]) -> np.ndarray:
    return np.array([item["embedding"] for item in body["data"]], dtype=np.float64)


def test_a_list_of_texts_is_embedded_in_one_call_in_order(world: World) -> None:
    r = world.post({"model": "fake", "input": ["ab", "abc", "x"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    assert body["model"] == "fake"
    assert [(d["object"], d["index"]) for d in body["data"]] == [
        ("embedding", 0), ("embedding", 1), ("embedding", 2)]
    # One token per character: 2 + 3 + 1.
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    assert world.embeddings.calls == [[[97, 98], [97, 98, 99], [120]]]
    vectors = _vectors(body)
    assert vectors.shape == (3, 8)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)


def test_an_alias_answers_with_the_model_id(world: World) -> None:
    r = world.post({"model": "alias", "input": "hi"})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "fake"


@pytest.mark.parametrize(("given", "expected", "tokens"), [
    ("hi", [[104, 105]], 2),
    ([5, 6, 7], [[5, 6, 7]], 3),
    ([[5, 6], [7], [999]], [[5, 6], [7], [999]], 4),
    ([1.0, 2], [[1, 2]], 2),  # an integral number is a JSON integer
])
def test_every_input_shape(world: World, given: Any, expected: list[list[int]],
                           tokens: int) -> None:
    r = world.post({"model": "fake", "input": given})
    assert r.status_code == 200, r.text
    assert world.embeddings.calls == [expected]
    assert len(r.json()["data"]) == len(expected)
    assert r.json()["usage"]["prompt_tokens"] == tokens


def test_base64_is_the_little_endian_float32_bytes_of_the_vector(world: World) -> None:
    inputs = ["the cat", "a dog!"]
    floats = world.post({"model": "fake", "input": inputs, "encoding_format": "float"}).json()
    coded = world.post({"model": "fake", "input": inputs, "encoding_format": "base64"}).json()
    for plain, packed in zip(floats["data"], coded["data"], strict=True):
        assert isinstance(packed["embedding"], str)
        raw = base64.b64decode(packed["embedding"])
        assert len(raw) == 8 * 4
        decoded = np.frombuffer(raw, dtype="<f4")
        assert decoded.tolist() == plain["embedding"]  # exactly: float32 values both ways
    assert coded["usage"] == floats["usage"]


def test_the_default_encoding_is_float(world: World) -> None:
    data = world.post({"model": "fake", "input": "x"}).json()["data"]
    assert isinstance(data[0]["embedding"], list)


def test_dimensions_is_refused_naming_it(world: World) -> None:
    r = world.post({"model": "fake", "input": "hi", "dimensions": 4})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "dimensions"
    assert error["code"] == "unsupported_parameter"
    assert "'dimensions'" in error["message"] and "Matryoshka" in error["message"]
    assert world.embeddings.calls == []


@pytest.mark.parametrize(("given", "named"), [
    ("", "'input'"),
    ([], "'input'"),
    ([""], "'input'"),
    (["a", ""], "'input[1]'"),
    ([[]], "'input'"),
    ([[1], []], "'input[1]'"),
])
def test_an_empty_input_is_a_400_naming_it(world: World, given: Any, named: str) -> None:
    r = world.post({"model": "fake", "input": given})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "input"
    assert error["message"].startswith(f"{named} is empty"), error
    assert world.embeddings.calls == []


def test_a_token_id_past_the_vocabulary_is_a_400(world: World) -> None:
    r = world.post({"model": "fake", "input": [[1, 2], [3, 1000, 4]]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "input"
    assert error["message"] == (
        "'input[1]' has token id 1000 at position 1, but the vocabulary of model 'fake' "
        "has 1000 tokens (ids 0 to 999).")
    assert world.embeddings.calls == []


def test_a_negative_token_id_is_refused_by_the_schema(world: World) -> None:
    r = world.post({"model": "fake", "input": [1, -1]})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"].startswith("input")


def test_an_input_longer_than_the_context_gives_both_numbers(world: World) -> None:
    r = world.post({"model": "fake", "input": ["short", "x" * 65]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "input"
    assert "'input[1]' has 65 tokens" in error["message"]
    assert "at most 64 tokens" in error["message"]
    assert world.embeddings.calls == []
    assert world.post({"model": "fake", "input": "x" * 64}).status_code == 200


def test_a_chat_only_model_says_it_does_not_serve_embeddings(world: World) -> None:
    r = world.post({"model": "chat-only", "input": "hi"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "unsupported_endpoint"
    assert error["param"] == "model"
    assert "'chat-only' does not serve embeddings" in error["message"]


def test_an_unknown_model_is_a_404(world: World) -> None:
    r = world.post({"model": "nope", "input": "hi"})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "fake", "input": "hi", "colour": 1}, "colour"),
    ({"model": "fake", "input": "hi", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "fake", "input": [1, "a"]}, "input"),
    ({"model": "fake", "input": [True]}, "input"),
    ({"model": "fake", "input": ["a"] * 2049}, "input"),
    ({"model": "fake"}, "input"),
])
def test_what_the_schema_forbids_is_a_422_naming_the_field(
    world: World, body: dict[str, Any], param: str
) -> None:
    r = world.post(body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] is not None and error["param"].startswith(param), error
    assert world.embeddings.calls == []


def test_a_user_is_accepted(world: World) -> None:
    assert world.post({"model": "fake", "input": "hi", "user": "u-1"}).status_code == 200


def test_a_loading_model_is_a_503_with_retry_after() -> None:
    for world in _world(FakeEmbeddings(ready=False)):
        r = world.post({"model": "fake", "input": "hi"})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "3"


def test_no_key_is_a_401_before_the_body_is_read(world: World) -> None:
    r = world.client.post("/v1/embeddings", content=b"{not json")
    assert r.status_code == 401


def test_the_catalog_lists_which_models_serve_embeddings(world: World) -> None:
    data = world.client.get("/v1/catalog", headers=AUTH).json()["data"]
    capabilities = {entry["id"]: entry["capabilities"] for entry in data}
    assert "embeddings" in capabilities["fake"]
    assert "embeddings" not in capabilities["chat-only"]


def test_a_success_is_one_ledger_row_with_the_tokens_embedded(metered: World) -> None:
    r = metered.post({"model": "alias", "input": ["abc", "de"]})
    assert r.status_code == 200, r.text
    [row] = metered.ledger.rows
    assert (row.status, row.http_status, row.model) == ("succeeded", 200, "fake")
    assert (row.prompt_tokens, row.completion_tokens, row.streamed) == (5, 0, False)
    assert (row.key_id, row.account_id) == ("key1", "acct")
    assert metered.limiter.released == [5]


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"model": "fake", "input": ""}, 400, "empty_input"),
    ({"model": "fake", "input": "hi", "dimensions": 2}, 400, "unsupported_parameter"),
    ({"model": "nope", "input": "hi"}, 404, "model_not_found"),
    ({"model": "other", "input": "hi"}, 403, "model_not_allowed"),  # not on its list
    ({"model": "chat-only", "input": "hi"}, 400, "unsupported_endpoint"),
    ({"model": "fake", "input": 3}, 422, "validation_error"),
])
def test_a_refusal_is_one_failed_ledger_row(
    metered: World, body: dict[str, Any], status: int, code: str
) -> None:
    r = metered.post(body)
    assert r.status_code == status, r.text
    [row] = metered.ledger.rows
    assert (row.status, row.http_status, row.error_code) == ("failed", status, code)
    assert row.model == body["model"]
    assert row.prompt_tokens == 0
    assert metered.embeddings.calls == []
