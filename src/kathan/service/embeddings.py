"""``EmbeddingService``: one embeddings request, from the resolved model to the vectors.

It goes the way a chat request does: the model is resolved for the caller's key
(404), the request admitted by its ``Meter`` (the allow-list: 403, the key's
limits: 429), and every ending writes the one ledger row (``end_meter``), a
success with the tokens embedded.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import cast

import numpy as np
import numpy.typing as npt

from kathan.backends.embeddings import EmbeddingModel
from kathan.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    UnsupportedParameterError,
)
from kathan.protocol.embeddings import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from kathan.routing.registry import ModelRegistry
from kathan.service.generation import end_meter
from kathan.service.metering import Meter

# OpenAI's bound on the tokens of one request, all inputs together.
MAX_REQUEST_TOKENS = 300_000


def encode(vector: npt.NDArray[np.float32], encoding_format: str) -> list[float] | str:
    """A vector as the client asked: numbers, or base64 of its little-endian float32 bytes.

    >>> encode(np.array([1.0, -0.5], dtype=np.float32), "base64")
    'AACAPwAAAL8='
    >>> encode(np.array([1.0, -0.5], dtype=np.float32), "float")
    [1.0, -0.5]
    """
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    values: list[float] = vector.tolist()
    return values


class EmbeddingService:
    """``create(request, meter=...)``: the request's embeddings, or a ``KathanError``
    raised after its ledger row is written."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def create(
        self, request: EmbeddingRequest, *, meter: Meter | None = None
    ) -> EmbeddingList:
        try:
            # Without metering every caller is a static admin key: every model.
            visible = meter.principal.may_use if meter is not None else _every_model
            entry = self.registry.resolve(request.model, visible)
            model = entry.embeddings
            if model is None:
                raise InvalidRequestError(
                    f"Model '{entry.id}' does not serve embeddings: it is a chat model "
                    "(POST /v1/chat/completions). GET /v1/catalog lists the models with "
                    "'embeddings' among their capabilities.",
                    param="model", code="unsupported_endpoint")
            if request.dimensions is not None:
                raise UnsupportedParameterError(
                    f"'dimensions' is not supported by model '{entry.id}': it has no "
                    "shortened (Matryoshka) embeddings, so its vectors always have their "
                    "full size. Leave 'dimensions' out.", param="dimensions")
            if meter is not None:
                await meter.admit(entry.id, entry.aliases)
            inputs = await _token_inputs(request.input, model)
            _check(inputs, model, entry.id)
            vectors = await model.embed(inputs)
        except BaseException as exc:
            if meter is not None:
                meter.model = meter.model or request.model
                await end_meter(meter, exc)
            raise
        tokens = sum(len(tokens) for tokens in inputs)
        if meter is not None:
            await meter.finish("succeeded", prompt_tokens=tokens)
        return EmbeddingList(
            data=[Embedding(index=i, embedding=encode(row, request.encoding_format))
                  for i, row in enumerate(vectors)],
            model=entry.id,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )


def _every_model(model: str, aliases: tuple[str, ...]) -> bool:
    return True


def _empty(what: str) -> InvalidRequestError:
    return InvalidRequestError(f"{what} is empty: there is nothing to embed.", param="input",
                               code="empty_input")


async def _token_inputs(
    given: str | list[str] | list[int] | list[list[int]], model: EmbeddingModel
) -> list[list[int]]:
    """The request's inputs as token ids: texts tokenized by the model, ids as given."""
    if isinstance(given, str):
        given = [given]
    if not given:
        raise _empty("'input'")
    # The schema's union: the first item tells which list it is.
    if isinstance(given[0], int):
        return [cast(list[int], given)]  # one input, as token ids
    for i, item in enumerate(given):
        if not item:
            raise _empty(f"'input[{i}]'" if len(given) > 1 else "'input'")
    if isinstance(given[0], list):
        return cast(list[list[int]], given)
    return await model.tokenize(cast(list[str], given))


def _check(inputs: Sequence[Sequence[int]], model: EmbeddingModel, model_id: str) -> None:
    """A 400 for an input the model cannot embed: no tokens, a token id it lacks, more
    tokens than its context, or more than a request may have in all."""
    single = len(inputs) == 1
    n_vocab, n_ctx = model.n_vocab, model.n_ctx
    total = 0
    for i, tokens in enumerate(inputs):
        name = "'input'" if single else f"'input[{i}]'"
        if not tokens:
            raise _empty(name)  # a text that tokenizes to nothing
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
