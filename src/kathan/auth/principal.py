"""Who is calling: the result of checking a bearer token."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from kathan.limits.base import Limits


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller.

    ``kind`` is ``static`` (a ``KATHAN_API_KEYS`` key: an admin with no account
    and no limits), ``key`` (a stored API key) or ``session`` (a login token,
    for managing one's own keys). ``models`` is the key's allow-list, None
    for all models.
    """

    kind: Literal["static", "key", "session"]
    is_admin: bool
    account_id: str | None = None
    key_id: str | None = None
    key_prefix: str | None = None
    models: frozenset[str] | None = None
    limits: Limits = field(default_factory=Limits)
    expires_at: datetime | None = None

    @property
    def limit_id(self) -> str | None:
        """What the limiter counts this caller's requests under: its key, or for a
        console session (the playground) its account's console identity."""
        if self.key_id is not None:
            return self.key_id
        if self.kind == "session" and self.account_id is not None:
            return f"console:{self.account_id}"  # store.repo.console_limit_id
        return None

    def may_use(self, model: str, aliases: tuple[str, ...] = ()) -> bool:
        if self.models is None:
            return True
        return model in self.models or any(a in self.models for a in aliases)
