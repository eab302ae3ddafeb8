"""``EmbeddingService``: one embeddings request, from the resolved model to the vectors.

It goes the way a chat request does: the model is resolved for the caller's key
(404), the request checked by the model's ``EmbeddingBackend`` (400s that need no
I/O), admitted by its ``Meter`` (the allow-list: 403, the key's limits: 429), and
every ending writes the one ledger row (``end_meter``), a success with the tokens
embedded as the backend counted them (the local model's tokenizer, or the
upstream's usage).
"""

from __future__ import annotations

from kathan.errors import InvalidRequestError
from kathan.protocol.embeddings import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from kathan.routing.registry import ModelRegistry
from kathan.service.generation import end_meter
from kathan.service.metering import Meter
from kathan.service.metrics import Metrics


class EmbeddingService:
    """``create(request, meter=...)``: the request's embeddings, or a ``KathanError``
    raised after its ledger row is written."""

    def __init__(self, registry: ModelRegistry, metrics: Metrics | None = None) -> None:
        self.registry = registry
        self.metrics = metrics

    async def create(
        self, request: EmbeddingRequest, *, meter: Meter | None = None
    ) -> EmbeddingList:
        try:
            # Without metering every caller is a static admin key: every model.
            visible = meter.principal.may_use if meter is not None else _every_model
            entry = self.registry.resolve(request.model, visible)
            backend = entry.embeddings
            if backend is None:
                raise InvalidRequestError(
                    f"Model '{entry.id}' does not serve embeddings: it is a chat model "
                    "(POST /v1/chat/completions). GET /v1/catalog lists the models with "
                    "'embeddings' among their capabilities.",
                    param="model", code="unsupported_endpoint")
            backend.check(request, entry.id)
            if meter is not None:
                await meter.admit(entry.id, entry.aliases)
            result = await backend.create(request, entry.id)
        except BaseException as exc:
            if meter is not None:
                meter.model = meter.model or request.model
                await end_meter(meter, exc)
            raise
        tokens = result.prompt_tokens
        if self.metrics is not None:
            self.metrics.observe_embeddings(entry.id, tokens)
        if meter is not None:
            await meter.finish("succeeded", prompt_tokens=tokens)
        return EmbeddingList(
            data=[Embedding(index=i, embedding=vector) for i, vector in enumerate(result.vectors)],
            model=entry.id,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )


def _every_model(model: str, aliases: tuple[str, ...]) -> bool:
    return True
