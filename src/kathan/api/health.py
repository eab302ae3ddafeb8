"""``GET /health`` (the process is up) and ``GET /ready`` (models can serve, and the
server is not shutting down)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from kathan.api import responses
from kathan.api.deps import RegistryDep
from kathan.errors import ModelNotReadyError

router = APIRouter()


class Status(BaseModel):
    status: str


@router.get("/health", response_model=Status)
async def health() -> Status:
    return Status(status="ok")


@router.get("/ready", response_model=Status, responses=responses.errors(503))
async def ready(request: Request, registry: RegistryDep) -> Status:
    drain = request.app.state.drain
    if drain.draining:
        raise drain.refusal()
    waiting = [e.id for e in registry.entries if not e.backend.ready]
    if waiting:
        raise ModelNotReadyError(
            f"Loading: {', '.join(waiting)}",
            retry_after=request.app.state.settings.retry_after_seconds,
        )
    return Status(status="ready")
