"""The embedding seams: what a model that serves ``/v1/embeddings`` offers
(``EmbeddingBackend``), and the local engine's implementation of it.

A ``ModelEntry`` whose ``embeddings`` is set serves the endpoint; the others are
refused with a 400 by ``EmbeddingService``. Two kinds of backend exist:

- ``TokenEmbeddings`` over an ``EmbeddingModel`` (the embedded engine's
  ``LocalEmbeddings``): texts are tokenized here, checked against the model's
  vocabulary and context, embedded, and encoded as the client asked.
- Upstream deployments (``backends/upstream_embeddings.py``), behind their model's
  router (``routing/embeddings.py``): the request goes to the provider, which
  tokenizes and counts itself.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np
import numpy.typing as npt

from kathan.engine.embed import EmbedderClosed
from kathan.engine.engine import LocalEngine
from kathan.engine.llama import DecodeError, LlamaLoadError
from kathan.errors import (
    ContextLengthExceededError,
    EngineError,
    InvalidRequestError,
    ModelNotReadyError,
    ShuttingDownError,
    UnsupportedParameterError,
)
from kathan.protocol.embeddings import EmbeddingRequest

if TYPE_CHECKING:
    from kathan.backends.base import Backend, DeltaStream, LoadStats
    from kathan.protocol.chat import ChatCompletionRequest

logger = logging.getLogger(__name__)

# OpenAI's bound on the tokens of one request, all inputs together.
MAX_REQUEST_TOKENS = 300_000

Vector = list[float] | str  # numbers, or base64 of little-endian float32 bytes


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """One request's vectors, in input order and in the encoding it asked for, and the
    tokens they took (what the ledger and the client's ``usage`` report)."""

    vectors: list[Vector]
    prompt_tokens: int


class EmbeddingBackend(Protocol):
    """What a model that serves ``/v1/embeddings`` offers.

    ``check`` raises a ``KathanError`` (a 400 naming the field) for what this backend
    can never honour, without I/O: it runs before the request is admitted.
    ``create`` raises a ``KathanError`` for every other failure (an input the model
    cannot take, an upstream that refused or failed); ``model_id`` is the model's
    name in Kathan, for messages.
    """

    def check(self, request: EmbeddingRequest, model_id: str) -> None: ...

    async def create(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResult: ...


class EmbeddingModel(Protocol):
    """A model Kathan embeds with itself. ``tokenize`` and ``embed`` raise ``KathanError``
    (503 while the model loads); ``n_vocab`` and ``n_ctx`` are known once ``ready``."""

    @property
    def ready(self) -> bool: ...

    @property
    def n_vocab(self) -> int:
        """Token ids run from 0 to ``n_vocab - 1``."""
        ...

    @property
    def n_ctx(self) -> int:
        """The most tokens one input may have."""
        ...

    async def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's tokens, as the model embeds it."""
        ...

    async def embed(self, inputs: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """One unit-length (L2) row per input, in order; every input is non-empty,
        within the vocabulary and at most ``n_ctx`` tokens long."""
        ...


def encode(vector: npt.NDArray[np.float32] | Sequence[float], encoding_format: str) -> Vector:
    """A vector as the client asked: numbers, or base64 of its little-endian float32 bytes.

    >>> encode(np.array([1.0, -0.5], dtype=np.float32), "base64")
    'AACAPwAAAL8='
    >>> encode([1.0, -0.5], "float")
    [1.0, -0.5]
    """
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    if isinstance(vector, np.ndarray):
        values: list[float] = vector.tolist()
        return values
    return vector if isinstance(vector, list) else [float(v) for v in vector]


def empty_input(what: str) -> InvalidRequestError:
    """The 400 for an input with nothing to embed (``what``: how the client named it)."""
    return InvalidRequestError(f"{what} is empty: there is nothing to embed.", param="input",
                               code="empty_input")


def input_name(i: int, count: int) -> str:
    """How an error names input ``i`` of ``count``."""
    return "'input'" if count == 1 else f"'input[{i}]'"


class TokenEmbeddings:
    """``EmbeddingBackend`` over an ``EmbeddingModel``: the request's texts tokenized by
    the model (token ids taken as given), each input checked against its vocabulary
    and context, all of them embedded together, and the tokens embedded counted."""

    def __init__(self, model: EmbeddingModel) -> None:
        self.model = model

    def check(self, request: EmbeddingRequest, model_id: str) -> None:
        if request.dimensions is not None:
            raise UnsupportedParameterError(
                f"'dimensions' is not supported by model '{model_id}': it has no "
                "shortened (Matryoshka) embeddings, so its vectors always have their "
                "full size. Leave 'dimensions' out.", param="dimensions")

    async def create(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResult:
        self.check(request, model_id)
        inputs = await _token_inputs(request.input, self.model)
        _check(inputs, self.model, model_id)
        vectors = await self.model.embed(inputs)
        return EmbeddingResult(
            vectors=[encode(row, request.encoding_format) for row in vectors],
            prompt_tokens=sum(len(tokens) for tokens in inputs))


async def _token_inputs(
    given: str | list[str] | list[int] | list[list[int]], model: EmbeddingModel
) -> list[list[int]]:
    """The request's inputs as token ids: texts tokenized by the model, ids as given."""
    if isinstance(given, str):
        given = [given]
    if not given:
        raise empty_input("'input'")
    # The schema's union: the first item tells which list it is.
    if isinstance(given[0], int):
        return [cast(list[int], given)]  # one input, as token ids
    for i, item in enumerate(given):
        if not item:
            raise empty_input(input_name(i, len(given)))
    if isinstance(given[0], list):
        return cast(list[list[int]], given)
    return await model.tokenize(cast(list[str], given))


def _check(inputs: Sequence[Sequence[int]], model: EmbeddingModel, model_id: str) -> None:
    """A 400 for an input the model cannot embed: no tokens, a token id it lacks, more
    tokens than its context, or more than a request may have in all."""
    n_vocab, n_ctx = model.n_vocab, model.n_ctx
    total = 0
    for i, tokens in enumerate(inputs):
        name = input_name(i, len(inputs))
        if not tokens:
            raise empty_input(name)  # a text that tokenizes to nothing
        if len(tokens) > n_ctx:
            raise ContextLengthExceededError(
                f"{name} has {len(tokens)} tokens, but model '{model_id}' embeds at most "
                f"{n_ctx} tokens per input (its context).", param="input")
        highest = max(tokens)
        if highest >= n_vocab:
            where = tokens.index(highest)
            raise InvalidRequestError(
                f"{name} has token id {highest} at position {where}, but the vocabulary of "
                f"model '{model_id}' has {n_vocab} tokens (ids 0 to {n_vocab - 1}).",
                param="input", code="invalid_token_id")
        total += len(tokens)
    if total > MAX_REQUEST_TOKENS:
        raise InvalidRequestError(
            f"'input' has {total} tokens in all, but one request may have at most "
            f"{MAX_REQUEST_TOKENS}; send the inputs in several requests.", param="input",
            code="too_many_tokens")


class EmbeddingOnly:
    """The chat side of an embedding model (a local model with ``chat: false``): every
    chat dialect (chat completions, Responses, Messages and its token count, legacy
    completions) gets a 400 naming the model. ``inner`` is the model's own backend,
    asked only whether it has loaded.

    It says it serves raw prompts so that a legacy completion reaches ``open`` and gets
    this 400, not the one for providers without completions.
    """

    serves_raw_prompts = True

    def __init__(self, model_id: str, inner: Backend) -> None:
        self.model_id = model_id
        self._inner = inner

    @property
    def ready(self) -> bool:
        return self._inner.ready

    def refusal(self) -> InvalidRequestError:
        return InvalidRequestError(
            f"Model '{self.model_id}' is an embedding model: it serves POST /v1/embeddings "
            "only, not chat completions, Responses, Messages or completions. GET "
            "/v1/models lists each model's endpoints.", param="model",
            code="unsupported_endpoint")

    def check(self, request: ChatCompletionRequest) -> None:
        raise self.refusal()

    async def open(self, request: ChatCompletionRequest) -> DeltaStream:
        raise self.refusal()

    def count_tokens(self, request: ChatCompletionRequest) -> int:
        raise self.refusal()

    async def probe(self) -> bool:
        return self.ready

    def stats(self) -> LoadStats | None:
        return None  # no slots, no queue: nothing for the engine's gauges


class LocalEmbeddings:
    """``EmbeddingModel`` over a local engine: its pooling type, L2-normalized."""

    def __init__(self, engine: LocalEngine, *, retry_after: int) -> None:
        self.engine = engine
        self._retry_after = retry_after

    @property
    def ready(self) -> bool:
        return self.engine.ready

    @property
    def n_vocab(self) -> int:
        return self.engine.model.info.n_vocab

    @property
    def n_ctx(self) -> int:
        return self.engine.n_ctx

    def _check_ready(self) -> None:
        if not self.engine.ready:
            raise ModelNotReadyError(
                "The model is still loading; try again shortly.", retry_after=self._retry_after)

    async def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        self._check_ready()
        engine = self.engine
        # Off the event loop: a request may carry megabytes of text.
        return await asyncio.to_thread(lambda: [engine.tokenize_text(t) for t in texts])

    async def embed(self, inputs: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        self._check_ready()
        try:
            return await self.engine.embed([list(tokens) for tokens in inputs])
        except EmbedderClosed as exc:
            raise ShuttingDownError("The server is stopping.",
                                    retry_after=self._retry_after) from exc
        except (LlamaLoadError, DecodeError) as exc:
            logger.exception("embedding failed")
            raise EngineError("The engine failed to compute the embeddings; the server "
                              "log has the cause.") from exc
