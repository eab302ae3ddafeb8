"""Embeddings on upstream deployments, at the transport seam: what the ``gemini`` mapping
sends (``batchEmbedContents``) and makes of the answer, what the ``openai`` pass-through
sends and converts, how refusals and malformed answers are mapped, and the model's
router around them (``RoutedEmbeddings``)."""

from __future__ import annotations

import base64
import json
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from kathan.backends.embeddings import EmbeddingResult, encode
from kathan.backends.relay import MALFORMED, StreamFailure
from kathan.backends.upstream import (
    Deployment,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
    error_for_status,
)
from kathan.backends.upstream_embeddings import GeminiEmbeddings, OpenAIEmbeddings
from kathan.errors import InvalidRequestError, ServiceUnavailableError
from kathan.protocol.embeddings import EmbeddingRequest
from kathan.routing.breaker import CircuitBreaker
from kathan.routing.embeddings import RoutedEmbeddings
from kathan.routing.picker import Route
from kathan.routing.retry import RetryPolicy
from kathan.routing.router import Router


class Answer:
    """A ``Response`` with a whole body (the transport seam's)."""

    def __init__(self, body: Any, status: int = 200, headers: Mapping[str, str] = {}) -> None:
        self.status = status
        self.reason = "OK" if status == 200 else "Error"
        self.headers = dict(headers)
        self._body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.at_eof = False
        self.released = self.closed = False

    async def read(self) -> bytes:
        self.at_eof = True
        return self._body

    async def text(self, errors: str = "replace") -> str:
        return (await self.read()).decode("utf-8", errors)

    async def iter_any(self) -> AsyncIterator[bytes]:
        self.at_eof = True
        yield self._body

    def release(self) -> None:
        self.released = True

    def release_when_read(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


@dataclass
class Posted:
    url: str
    headers: Mapping[str, str]
    body: Any


@dataclass
class Transport:
    """Answers each POST with the next of ``answers``, and keeps what was posted."""

    answers: deque[Answer] = field(default_factory=deque)
    posted: list[Posted] = field(default_factory=list)

    def endpoint(self, url: str, headers: Mapping[str, str]) -> Endpoint:
        return Endpoint(self, url, headers)

    async def close(self) -> None:
        return None


@dataclass
class Endpoint:
    transport: Transport
    url: str
    headers: Mapping[str, str]

    async def post(self, body: bytes, *, connect_timeout: float, read_timeout: float) -> Answer:
        self.transport.posted.append(Posted(self.url, self.headers, json.loads(body)))
        return self.transport.answers.popleft()


def gemini_answer(texts: list[str], size: int = 3, *, usage: bool = True) -> Answer:
    body: dict[str, Any] = {"embeddings": [{"values": vector(t, size)} for t in texts]}
    if usage:
        body["usageMetadata"] = {"promptTokenCount": sum(len(t.split()) for t in texts)}
    return Answer(body)


def vector(text: str, size: int) -> list[float]:
    return [float(len(text)), *(0.5 / (k + 1) for k in range(size - 1))]


def request(**fields: Any) -> EmbeddingRequest:
    return EmbeddingRequest.model_validate({"model": "kathan-name", **fields})


GEMINI = Deployment("gemini", "gemini-embedding-001", "https://gemini.test/", api_key="g-key",
                    headers={"X-Team": "a"}, name="emb#0")
OPENAI = Deployment("openai", "text-embedding-3-small", "https://openai.test/v1",
                    api_key="sk-up", name="emb#1")


async def test_gemini_gets_one_embed_request_per_text_with_its_dimensions() -> None:
    transport = Transport(deque([gemini_answer(["a b", "c"], 2)]))
    backend = GeminiEmbeddings(GEMINI, transport)
    result = await backend.create(request(input=["a b", "c"], dimensions=2, user="u"), "emb")
    [posted] = transport.posted
    assert posted.url == ("https://gemini.test/v1beta/models/gemini-embedding-001"
                          ":batchEmbedContents")
    assert posted.headers["x-goog-api-key"] == "g-key" and posted.headers["X-Team"] == "a"
    assert posted.body == {"requests": [
        {"model": "models/gemini-embedding-001", "outputDimensionality": 2,
         "content": {"parts": [{"text": "a b"}]}},
        {"model": "models/gemini-embedding-001", "outputDimensionality": 2,
         "content": {"parts": [{"text": "c"}]}},
    ]}  # no `user`: Gemini has no such field
    assert result == EmbeddingResult(vectors=[vector("a b", 2), vector("c", 2)],
                                     prompt_tokens=3)


async def test_gemini_base64_is_encoded_here_from_the_floats() -> None:
    transport = Transport(deque([gemini_answer(["one"])]))
    result = await GeminiEmbeddings(GEMINI, transport).create(
        request(input="one", encoding_format="base64"), "emb")
    [encoded] = result.vectors
    assert isinstance(encoded, str) and encoded == encode(vector("one", 3), "base64")
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert np.allclose(decoded, vector("one", 3))
    assert "outputDimensionality" not in transport.posted[0].body["requests"][0]


async def test_gemini_takes_at_most_100_texts_a_call_and_keeps_the_order() -> None:
    texts = [f"text number {i}" for i in range(250)]
    transport = Transport(deque([gemini_answer(texts[:100]), gemini_answer(texts[100:200]),
                                 gemini_answer(texts[200:])]))
    result = await GeminiEmbeddings(GEMINI, transport).create(request(input=texts), "emb")
    assert [len(p.body["requests"]) for p in transport.posted] == [100, 100, 50]
    sent = [r["content"]["parts"][0]["text"] for p in transport.posted
            for r in p.body["requests"]]
    assert sent == texts
    assert result.vectors == [vector(t, 3) for t in texts]
    assert result.prompt_tokens == 3 * 250


@pytest.mark.parametrize("given", [[1, 2, 3], [[1, 2], [3]]])
def test_gemini_refuses_token_ids_before_sending(given: Any) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        GeminiEmbeddings(GEMINI, Transport()).check(request(input=given), "emb")
    assert caught.value.param == "input" and caught.value.code == "unsupported_input"
    assert "text only" in caught.value.message


@pytest.mark.parametrize(("given", "named"), [("", "'input'"), (["ok", ""], "'input[1]'"),
                                              ([], "'input'")])
async def test_gemini_refuses_an_empty_text(given: Any, named: str) -> None:
    transport = Transport()
    with pytest.raises(InvalidRequestError) as caught:
        await GeminiEmbeddings(GEMINI, transport).create(request(input=given), "emb")
    assert caught.value.code == "empty_input" and caught.value.message.startswith(named)
    assert transport.posted == []


async def test_gemini_without_token_counts_reports_zero_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = Transport(deque([gemini_answer(["a"], usage=False),
                                 gemini_answer(["b"], usage=False)]))
    backend = GeminiEmbeddings(GEMINI, transport)
    with caplog.at_level(logging.WARNING):
        first = await backend.create(request(input="a"), "emb")
        second = await backend.create(request(input="b"), "emb")
    assert first.prompt_tokens == second.prompt_tokens == 0
    warnings = [r for r in caplog.records if "usageMetadata" in r.getMessage()]
    assert len(warnings) == 1 and "emb#0" in warnings[0].getMessage()


@pytest.mark.parametrize("body", [
    {"embeddings": [{"values": [1.0]}, {"values": [2.0]}]},  # two vectors for one text
    {"embeddings": [{"values": ["x"]}]},
    {"embeddings": [{}]},
    {"nothing": True},
    b"not json",
])
async def test_a_malformed_gemini_answer_is_a_retryable_503(body: Any) -> None:
    answer = Answer(body)
    with pytest.raises(StreamFailure) as caught:
        await GeminiEmbeddings(GEMINI, Transport(deque([answer]))).create(
            request(input="a"), "emb")
    assert caught.value.status_code == 503 and caught.value.code == MALFORMED
    assert caught.value.retryable and answer.released


def google_error(status: int, message: str, *details: dict[str, Any]) -> Answer:
    return Answer({"error": {"code": status, "message": message, "status": "X",
                             "details": list(details)}}, status=status)


@pytest.mark.parametrize(("answer", "kind", "status"), [
    (google_error(400, "Request contains an invalid argument."), UpstreamBadRequest, 400),
    (google_error(429, "Quota exceeded", {"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                          "retryDelay": "7s"}), UpstreamRateLimited, 429),
    (google_error(500, "Internal error"), UpstreamUnavailable, 503),
    (google_error(400, "API key not valid.", {"reason": "API_KEY_INVALID"}),
     UpstreamUnavailable, 503),
])
async def test_gemini_refusals_are_mapped_as_for_chat(
    answer: Answer, kind: type[UpstreamError], status: int
) -> None:
    with pytest.raises(kind) as caught:
        await GeminiEmbeddings(GEMINI, Transport(deque([answer]))).create(
            request(input="a"), "emb")
    assert caught.value.status_code == status
    if status == 429:
        assert caught.value.retry_after == 7 and caught.value.retryable


async def test_openai_gets_the_request_as_sent() -> None:
    data = [{"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
            {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]}]
    transport = Transport(deque([Answer({"object": "list", "data": data, "model": "x",
                                         "usage": {"prompt_tokens": 9, "total_tokens": 9}})]))
    backend = OpenAIEmbeddings(OPENAI, transport)
    sent = {"input": [[1, 2], [3]], "dimensions": 2, "user": "u", "encoding_format": "float"}
    result = await backend.create(request(**sent), "emb")
    [posted] = transport.posted
    assert posted.url == "https://openai.test/v1/embeddings"
    assert posted.headers["Authorization"] == "Bearer sk-up"
    assert posted.body == {**sent, "model": "text-embedding-3-small"}
    assert result == EmbeddingResult(vectors=[[1.0, 0.0], [0.0, 1.0]], prompt_tokens=9)
    # Fields the client left out stay out: the upstream's defaults apply.
    transport.answers.append(Answer({"data": [{"index": 0, "embedding": [1.0]}]}))
    result = await backend.create(request(input="hi"), "emb")
    assert transport.posted[-1].body == {"model": "text-embedding-3-small", "input": "hi"}
    assert result.prompt_tokens == 0  # no usage in the answer: nothing is made up


async def test_openai_vectors_come_in_the_encoding_asked_for() -> None:
    floats = [0.25, -1.5]
    packed = encode(floats, "base64")
    transport = Transport(deque([
        Answer({"data": [{"index": 0, "embedding": floats}]}),  # ignored encoding_format
        Answer({"data": [{"index": 0, "embedding": packed}]}),
        Answer({"data": [{"index": 0, "embedding": packed}]}),
    ]))
    backend = OpenAIEmbeddings(OPENAI, transport)
    as_base64 = await backend.create(request(input="a", encoding_format="base64"), "emb")
    assert as_base64.vectors == [packed]
    as_floats = await backend.create(request(input="a", encoding_format="float"), "emb")
    assert as_floats.vectors == [floats]
    kept = await backend.create(request(input="a", encoding_format="base64"), "emb")
    assert kept.vectors == [packed]


@pytest.mark.parametrize("body", [
    {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0]}]},
    {"data": [{"index": 3, "embedding": [1.0]}]},
    {"data": [{"index": 0, "embedding": "not base64!"}]},
    {"data": [{"index": 0, "embedding": {"no": 1}}]},
    {"object": "list"},
])
async def test_a_malformed_openai_answer_is_a_retryable_503(body: Any) -> None:
    with pytest.raises(StreamFailure) as caught:
        await OpenAIEmbeddings(OPENAI, Transport(deque([Answer(body)]))).create(
            request(input="a"), "emb")
    assert caught.value.code == MALFORMED and caught.value.retryable


async def test_an_openai_refusal_keeps_the_upstreams_words() -> None:
    refusal = Answer({"error": {"message": "This model does not support dimensions."}},
                     status=400)
    with pytest.raises(UpstreamBadRequest) as caught:
        await OpenAIEmbeddings(OPENAI, Transport(deque([refusal]))).create(
            request(input="a", dimensions=3), "emb")
    assert "does not support dimensions" in caught.value.message
    in_body = Answer({"error": {"message": "overloaded", "code": 503}})
    with pytest.raises(UpstreamUnavailable) as failed:
        await OpenAIEmbeddings(OPENAI, Transport(deque([in_body]))).create(
            request(input="a"), "emb")
    assert failed.value.retryable


class Scripted:
    """An ``EmbeddingBackend`` that fails with ``failures``, one per call, then answers."""

    def __init__(self, *failures: UpstreamError) -> None:
        self.failures = list(failures)
        self.calls = 0

    def check(self, request: EmbeddingRequest, model_id: str) -> None:
        if request.dimensions == 99:
            raise InvalidRequestError("no 99", param="dimensions")

    async def create(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResult:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return EmbeddingResult(vectors=[[1.0]], prompt_tokens=1)


class Chat:
    """A route's chat backend (not used by embeddings)."""

    ready = True


class First(random.Random):
    """Breaks ties for the first route."""

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[0]


def routed(*backends: Scripted | None, retries: int = 2) -> tuple[RoutedEmbeddings, list[Route]]:
    routes = [Route(Deployment("openai", "m", name=f"m#{i}"), Chat(),  # type: ignore[arg-type]
                    CircuitBreaker(2, 30.0)) for i in range(len(backends))]

    async def no_wait(seconds: float) -> None:
        return None

    router = Router("m", routes, RetryPolicy(retries, 0.0), sleep=no_wait, rng=First())
    return RoutedEmbeddings(router, {r: b for r, b in zip(routes, backends, strict=True)
                                     if b is not None}), routes


async def test_a_failed_deployment_is_retried_on_another_and_counted() -> None:
    failing, healthy = Scripted(error_for_status(500, "down")), Scripted()
    embeddings, routes = routed(failing, healthy)
    result = await embeddings.create(request(input="a"), "m")
    assert result.vectors == [[1.0]]
    assert failing.calls == healthy.calls == 1
    assert routes[0].breaker.failures == 1 and routes[1].breaker.failures == 0
    assert all(r.in_flight == 0 for r in routes)
    await embeddings.create(request(input="a"), "m")  # the first route answers now
    assert failing.calls == 2 and routes[0].breaker.failures == 0


async def test_only_the_deployments_that_embed_are_asked() -> None:
    embeddings, routes = routed(None, Scripted())  # an anthropic deployment has none
    for _ in range(4):
        await embeddings.create(request(input="a"), "m")
    assert routes[0].in_flight == routes[1].in_flight == 0


async def test_a_refusal_is_final_and_a_rate_limit_is_passed_on() -> None:
    refused = Scripted(error_for_status(400, "bad input"))
    embeddings, _ = routed(refused)
    with pytest.raises(UpstreamBadRequest):
        await embeddings.create(request(input="a"), "m")
    assert refused.calls == 1
    limited = Scripted(*(error_for_status(429, "slow down", retry_after=4),) * 3)
    embeddings, _ = routed(limited)
    with pytest.raises(UpstreamRateLimited) as caught:
        await embeddings.create(request(input="a"), "m")
    assert limited.calls == 3 and caught.value.retry_after == 4
    down = Scripted(*(error_for_status(503, "down"),) * 3)
    embeddings, _ = routed(down)
    with pytest.raises(ServiceUnavailableError) as unavailable:
        await embeddings.create(request(input="a"), "m")
    assert unavailable.value.code == "no_healthy_deployment"


def test_every_deployments_check_runs_before_any_call() -> None:
    embeddings, _ = routed(Scripted(), Scripted())
    with pytest.raises(InvalidRequestError):
        embeddings.check(request(input="a", dimensions=99), "m")
