"""``POST /v1/embeddings``, a ``GenerationRoute`` (``api/routes.py``).

The endpoint only translates the request into ``EmbeddingService`` and its answer
into JSON. As on the chat route, the key is checked by ``deps.api_key`` before the
body is judged (a 401 comes before a 422), and the body is read by
``deps.read_json``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from kathan.api import responses
from kathan.api.deps import api_key, read_json
from kathan.api.disconnect import unless_disconnected
from kathan.api.routes import GenerationRoute
from kathan.protocol.embeddings import EmbeddingList, EmbeddingRequest
from kathan.service.embeddings import EmbeddingService
from kathan.service.metering import Meter, Metering

PATH = "/v1/embeddings"


async def create_embeddings(request: Request) -> Response:
    """Embeddings of texts or token ids, OpenAI's shape: unit-length (L2) vectors."""
    principal = await api_key(request)
    body = await read_json(request, EmbeddingRequest, principal)
    state = request.app.state
    metering: Metering | None = state.metering
    meter: Meter | None = None
    if metering is not None:
        meter = metering.begin(principal, streamed=False, endpoint="embeddings")
    service = EmbeddingService(state.registry, state.metrics)
    result = await unless_disconnected(request.receive, service.create(body, meter=meter))
    return Response(result.model_dump_json(), media_type="application/json",
                    headers=meter.rate_headers() if meter else None)


route = GenerationRoute(
    PATH, create_embeddings, body=EmbeddingRequest, answer=EmbeddingList,
    responses={200: {"description": "One embedding per input, in order, with the tokens "
                     "embedded."},
               **responses.errors(400, 401, 403, 404, 413, 422, 429, 503)},
    summary="Create Embeddings",
)
