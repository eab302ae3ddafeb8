"""A configured model's embeddings: its deployments that have an embeddings API, behind
the model's ``Router``."""

from __future__ import annotations

from collections.abc import Mapping

from kathan.backends.embeddings import EmbeddingBackend, EmbeddingResult
from kathan.protocol.embeddings import EmbeddingRequest
from kathan.routing.picker import Route
from kathan.routing.router import Router


class RoutedEmbeddings:
    """``EmbeddingBackend`` of a configured model: ``backends`` holds one per route that
    can embed (an ``openai`` or ``gemini`` deployment; an ``anthropic`` one has no
    embeddings API and is never picked). ``create`` goes through ``Router.call``: the
    chat path's balancing, retries, circuit breakers, in-flight places and deadline,
    without fallbacks to other models (their vectors are not this model's)."""

    def __init__(self, router: Router, backends: Mapping[Route, EmbeddingBackend]) -> None:
        self.router = router
        self.backends = dict(backends)

    def check(self, request: EmbeddingRequest, model_id: str) -> None:
        """Every deployment's checks, so that the answer does not depend on the pick."""
        for backend in self.backends.values():
            backend.check(request, model_id)

    async def create(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResult:
        async def attempt(route: Route) -> EmbeddingResult:
            return await self.backends[route].create(request, model_id)

        return await self.router.call(attempt, routes=self.backends.keys())
