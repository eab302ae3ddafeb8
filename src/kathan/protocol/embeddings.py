"""Embedding requests and responses, OpenAI's shape (``POST /v1/embeddings``)."""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field

from kathan.protocol.chat import INT64_MAX, JSON_INTEGER

# OpenAI's bound on the inputs of one request.
MAX_INPUTS = 2048

TokenIds = Annotated[list[Annotated[int, Ge(0), Le(INT64_MAX), *JSON_INTEGER]], Field(
    description="One input given as token ids.")]


class EmbeddingRequest(BaseModel):
    """What to embed. Unknown fields are refused (422), types read as JSON Schema reads
    them. Rules the schema cannot state (an empty input, a token id past the
    vocabulary, an input longer than the model's context) are 400s naming ``input``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1)
    input: (
        str
        | Annotated[list[str], Field(max_length=MAX_INPUTS)]
        | TokenIds
        | Annotated[list[TokenIds], Field(max_length=MAX_INPUTS)]
    ) = Field(description=(
        "A text, a list of texts, a list of token ids (one input), or a list of such "
        f"lists; at most {MAX_INPUTS} inputs, none empty."))
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`float`: each embedding as a list of numbers; `base64`: its "
        "little-endian float32 bytes, base64-encoded.")
    dimensions: Annotated[int, Ge(1), Le(INT64_MAX), *JSON_INTEGER] | None = Field(
        None, description="Only for models with shortened (Matryoshka) embeddings; the "
        "embedded model has none, so it refuses this with a 400.")
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(
        description="The vector, or with `encoding_format: base64` its little-endian "
        "float32 bytes in base64.")


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
