"""The model registry: ids and aliases mapped to the backend that serves them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kathan.backends.base import Backend
from kathan.errors import InvalidRequestError, ModelNotFoundError
from kathan.protocol.chat import ChatCompletionRequest
from kathan.settings import VOICE_MAX_TOKENS

if TYPE_CHECKING:
    from kathan.backends.embeddings import EmbeddingBackend


@dataclass(frozen=True, slots=True)
class Ceilings:
    """The most one request may ask of a model (None: no ceiling)."""

    max_tokens: int | None = None
    max_n: int | None = None

    def check(self, model: str, request: ChatCompletionRequest) -> None:
        """A 400 that gives the numbers for a request over a ceiling."""
        for name in ("max_completion_tokens", "max_tokens"):
            asked = getattr(request, name)
            if self.max_tokens is not None and asked is not None and asked > self.max_tokens:
                raise InvalidRequestError(
                    f"'{name}' is {asked}, but model '{model}' allows at most "
                    f"{self.max_tokens} per request.", param=name, code="max_tokens_too_large")
        if self.max_n is not None and (request.n or 1) > self.max_n:
            raise InvalidRequestError(
                f"'n' is {request.n}, but model '{model}' allows at most {self.max_n} choices "
                "per request.", param="n", code="n_too_large")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    owned_by: str
    created: int
    backend: Backend
    aliases: tuple[str, ...] = field(default=())
    voice_model: str | None = None  # where `finetune: true` goes (an id or alias)
    ceilings: Ceilings = field(default=Ceilings())
    voice_max_tokens: int = VOICE_MAX_TOKENS  # a voice request's max_tokens when it gives none
    embeddings: EmbeddingBackend | None = None  # None: no /v1/embeddings (chat only)
    chat: bool = True  # False: an embedding model, whose backend refuses every chat dialect


# Whether a key may use a model, given its id and aliases (``Principal.may_use``).
Visible = Callable[[str, tuple[str, ...]], bool]


class ModelRegistry:
    """Resolves a requested model name (id or alias) to its entry.

    >>> entry = ModelEntry("smollm2-135m-instruct", "kathan", 0, backend=None,  # unused here
    ...                    aliases=("default",))
    >>> ModelRegistry([entry]).resolve("default").id
    'smollm2-135m-instruct'
    """

    def __init__(self, entries: list[ModelEntry]) -> None:
        self._entries = list(entries)
        self._by_name: dict[str, ModelEntry] = {}
        for entry in entries:
            for name in (entry.id, *entry.aliases):
                if name in self._by_name:
                    raise ValueError(f"model name {name!r} is configured twice")
                self._by_name[name] = entry

    def resolve(self, name: str, visible: Visible | None = None) -> ModelEntry:
        """The entry ``name`` names, or a 404. With ``visible`` (a key's
        ``Principal.may_use``), the 404 lists the models that key may use."""
        entry = self._by_name.get(name)
        if entry is None:
            raise self.missing(name, visible)
        return entry

    def missing(self, name: str, visible: Visible | None = None) -> ModelNotFoundError:
        """The 404 for ``name``, listing the models ``visible`` allows (when given)."""
        if visible is None:
            return ModelNotFoundError(name)
        return ModelNotFoundError(name, [e.id for e in self._entries if visible(e.id, e.aliases)])

    def names(self) -> list[tuple[str, ModelEntry]]:
        """Every listed name (ids first, then aliases) with its entry."""
        ids = [(e.id, e) for e in self._entries]
        aliases = [(a, e) for e in self._entries for a in e.aliases]
        return ids + aliases

    @property
    def entries(self) -> list[ModelEntry]:
        return list(self._entries)
