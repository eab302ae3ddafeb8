"""Model listing: the seeds' shape (id, object, created, owned_by), and the endpoints
each model serves."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    endpoints: list[str] = Field(
        default_factory=list, description="The APIs that serve this model: their paths "
        "after /v1/ (`chat/completions`, `responses`, `messages`, and for some models "
        "`completions` and `embeddings`).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
