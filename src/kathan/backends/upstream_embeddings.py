"""Embeddings from upstream deployments: each class is the ``EmbeddingBackend`` of one
deployment, which ``routing/embeddings.RoutedEmbeddings`` puts behind its model's
router (balancing, retries, circuit breakers, the deadline).

- ``openai``: the request goes to ``{base_url}/embeddings`` as the client sent it
  (texts or token ids, ``encoding_format``, ``dimensions``, ``user``; only
  ``model`` becomes the deployment's), and its vectors and usage come back. A
  vector in another encoding than the one asked for (a server that ignores
  ``encoding_format``) is converted.
- ``gemini``: texts go to ``{base_url}/v1beta/models/{model}:batchEmbedContents``,
  one ``EmbedContentRequest`` each, ``dimensions`` as ``outputDimensionality``,
  at most 100 per call (Gemini's limit; more inputs are sent in several calls, one
  after the other). Token ids are a 400: Gemini takes text only. ``user`` has no
  Gemini counterpart and is not sent. Vectors come back as Gemini gives them
  (Gemini normalizes only full-size ones); base64 is encoded here from its floats.
  The tokens are ``usageMetadata.promptTokenCount``; an answer without it (older
  API versions) counts 0 tokens, and the server log says so once per deployment.

Both send through the ``Transport`` with the deployment's URL, key, headers and
timeouts, and map an upstream's refusal as the chat backends do (``send``: 4xx
passed on, 401/403 and 5xx a 503, 429 a 429). An answer that breaks off or cannot
be read is a 503 (``upstream_stream_broken``, ``upstream_bad_response``), retryable
as a stream that fails before its first event: the client has nothing yet.
"""

from __future__ import annotations

import base64
import logging
from typing import Any
from urllib.parse import quote

import numpy as np
from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic_core import to_json

from kathan.backends.embeddings import EmbeddingResult, Vector, empty_input, encode, input_name
from kathan.backends.gemini import google_refusal
from kathan.backends.openai import error_message
from kathan.backends.relay import BROKEN, MALFORMED, StreamFailure, json_object
from kathan.backends.transport import Response, Transport
from kathan.backends.upstream import Deployment, UpstreamError, error_for_status, refused, send
from kathan.errors import InvalidRequestError
from kathan.protocol.embeddings import EmbeddingRequest

logger = logging.getLogger(__name__)

GEMINI_MAX_BATCH = 100  # BatchEmbedContentsRequest.requests: "at most 100 requests"

_FLOATS = TypeAdapter(list[float], config=ConfigDict(strict=True))


def _malformed(what: str) -> StreamFailure:
    return StreamFailure(f"The upstream sent a malformed answer: {what}.", code=MALFORMED,
                         retryable=True)


async def read_answer(response: Response) -> dict[str, Any]:
    """A success ``response``'s whole body as a JSON object; the response is released
    once read, and closed when reading fails (or is cancelled: the upstream stops)."""
    try:
        raw = await response.read()
    except (TimeoutError, OSError) as exc:
        response.close()
        raise StreamFailure(f"The upstream's answer broke off: {type(exc).__name__}.",
                            code=BROKEN, retryable=True) from exc
    except BaseException:
        response.close()
        raise
    response.release()
    try:
        return json_object(raw.decode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise _malformed("not a JSON object") from exc


def _as_requested(value: Any, encoding_format: str) -> Vector:
    """A vector from the upstream (numbers, or base64 of float32s) in the encoding the
    client asked for; ``ValueError`` when it is neither."""
    if isinstance(value, str):
        if encoding_format == "base64":
            base64.b64decode(value, validate=True)  # binascii.Error is a ValueError
            return value
        floats: list[float] = np.frombuffer(base64.b64decode(value, validate=True),
                                            dtype="<f4").tolist()
        return floats
    return encode(_floats(value), encoding_format)


def _floats(value: Any) -> list[float]:
    try:
        return _FLOATS.validate_python(value)
    except ValidationError as exc:
        raise ValueError("a vector is not a list of numbers") from exc


def _count(usage: Any, key: str) -> int | None:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


class OpenAIEmbeddings:
    """One OpenAI-compatible deployment's ``/embeddings``: the request as sent."""

    def __init__(self, deployment: Deployment, transport: Transport) -> None:
        self.deployment = deployment
        auth = {**deployment.headers}
        if deployment.api_key:
            auth["Authorization"] = f"Bearer {deployment.api_key}"
        self._endpoint = transport.endpoint(deployment.base_url.rstrip("/") + "/embeddings", {
            "Content-Type": "application/json", "Accept-Encoding": "gzip, deflate",
            "User-Agent": "kathan", **auth,
        })

    def check(self, request: EmbeddingRequest, model_id: str) -> None:
        return None  # every parameter goes upstream as sent

    async def create(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResult:
        body = request.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        body["model"] = self.deployment.model
        response = await send(self._endpoint, to_json(body), self.deployment, _openai_refusal)
        answer = await read_answer(response)
        if "error" in answer:  # a 200 that carries an error (some servers' way)
            raise _error_in_answer(answer["error"])
        given = request.input
        count = 1 if isinstance(given, str) or (given and isinstance(given[0], int)) \
            else len(given)
        try:
            data = sorted(answer["data"], key=lambda item: int(item["index"]))
            if len(data) != count or [int(item["index"]) for item in data] != list(range(count)):
                raise ValueError(f"{len(data)} embeddings for {count} inputs")
            vectors = [_as_requested(item["embedding"], request.encoding_format)
                       for item in data]
        except (ValueError, TypeError, LookupError) as exc:
            raise _malformed(str(exc) if isinstance(exc, ValueError) else "no data") from exc
        # A server that reports no usage counts 0 tokens, as the chat relay does.
        tokens = _count(answer.get("usage"), "prompt_tokens") or 0
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens)


def _openai_refusal(response: Response, raw: bytes) -> UpstreamError:
    return refused(response, error_message(raw, response))


def _error_in_answer(error: Any) -> UpstreamError:
    if not isinstance(error, dict):
        return error_for_status(500, str(error)[:500])
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    return error_for_status(status, str(error.get("message") or error.get("type") or error))


class GeminiEmbeddings:
    """One Gemini deployment's ``batchEmbedContents``: texts only."""

    def __init__(self, deployment: Deployment, transport: Transport) -> None:
        self.deployment = deployment
        model = deployment.model.removeprefix("models/")
        self._model = f"models/{model}"
        base = deployment.base_url.rstrip("/")
        key = {"x-goog-api-key": deployment.api_key} if deployment.api_key else {}
        self._endpoint = transport.endpoint(
            f"{base}/v1beta/models/{quote(model, safe='')}:batchEmbedContents", {
                **deployment.headers, "Content-Type": "application/json",
                "Accept-Encoding": "gzip, deflate", **key,
            })
        self._warned = False  # about answers without token counts

    def check(self, request: EmbeddingRequest, model_id: str) -> None:
        given = request.input
        if isinstance(given, list) and given and not isinstance(given[0], str):
            raise InvalidRequestError(
                f"'input' holds token ids, but model '{model_id}' is served by Gemini, whose "
                "embedding API takes text only: send the texts themselves.", param="input",
                code="unsupported_input")

    async def create(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResult:
        self.check(request, model_id)
        given = request.input
        texts = [given] if isinstance(given, str) else [str(t) for t in given]
        if not texts:
            raise empty_input("'input'")
        for i, text in enumerate(texts):
            if not text:
                raise empty_input(input_name(i, len(texts)))
        vectors: list[Vector] = []
        tokens = 0
        for start in range(0, len(texts), GEMINI_MAX_BATCH):
            batch = texts[start:start + GEMINI_MAX_BATCH]
            values, counted = await self._batch(batch, request.dimensions)
            vectors += [encode(v, request.encoding_format) for v in values]
            tokens += counted or 0
            if counted is None and not self._warned:
                self._warned = True
                logger.warning("deployment %s: Gemini's embeddings answer has no "
                               "usageMetadata.promptTokenCount; its requests are recorded "
                               "with 0 prompt tokens", self.deployment.name)
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens)

    async def _batch(
        self, texts: list[str], dimensions: int | None
    ) -> tuple[list[list[float]], int | None]:
        """One call: each text's values, and the tokens Gemini counted (None: not said)."""
        one: dict[str, Any] = {"model": self._model}
        if dimensions is not None:
            one["outputDimensionality"] = dimensions
        body = {"requests": [{**one, "content": {"parts": [{"text": text}]}}
                             for text in texts]}
        response = await send(self._endpoint, to_json(body), self.deployment, google_refusal)
        answer = await read_answer(response)
        try:
            embeddings = answer["embeddings"]
            if len(embeddings) != len(texts):
                raise ValueError(f"{len(embeddings)} embeddings for {len(texts)} inputs")
            values = [_floats(e["values"]) for e in embeddings]
        except (ValueError, TypeError, LookupError) as exc:
            what = str(exc) if isinstance(exc, ValueError) else "no embeddings' values"
            raise _malformed(what) from exc
        return values, _count(answer.get("usageMetadata"), "promptTokenCount")
