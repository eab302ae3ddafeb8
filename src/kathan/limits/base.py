"""What a limiter enforces, and the seam both limiters implement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

QuotaPeriod = Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class Limits:
    """A key's limits; None means unlimited."""

    rpm: int | None = None  # requests started in any 60 s window
    tpm: int | None = None  # prompt + completion tokens of requests ended in any 60 s window
    max_concurrent: int | None = None  # requests in flight at once
    quota_tokens: int | None = None  # prompt + completion tokens per UTC day or month
    quota_period: QuotaPeriod | None = None
    max_tokens: int | None = None  # the most one request may ask (not the limiter's)

    @property
    def none(self) -> bool:
        """Nothing for the limiter to count (``max_tokens`` is checked per request)."""
        return (self.rpm, self.tpm, self.max_concurrent, self.quota_tokens) == (None,) * 4


@dataclass(frozen=True, slots=True)
class Window:
    """Where a key stands in its RPM and TPM windows once a request was admitted (for the
    ``x-ratelimit-*`` headers): what is left, and seconds until the window has room for
    all of it again (None where the key has no such limit)."""

    remaining_requests: int | None = None
    reset_requests: float | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof that a request was admitted; give it back with ``release``."""

    key_id: str
    lease_id: str
    limits: Limits
    window: Window = Window()


class Limiter(Protocol):
    """Admits requests for a key within its limits.

    ``acquire`` checks every limit and, only when all pass, counts the request
    (one RPM entry, one concurrency slot) atomically: a refused request uses
    nothing. It raises ``RateLimitError`` naming the limit, with
    ``retry_after`` in whole seconds (at least 1). ``release`` frees the slot
    and adds the request's tokens to the TPM window and the quota period.
    Times are seconds since the epoch (``time.time()``); tests pass ``now``.
    The caller hands every lease that ``acquire`` returns to ``release``, once.
    """

    async def acquire(self, key_id: str, limits: Limits, *, now: float | None = None) -> Lease: ...

    async def release(self, lease: Lease, tokens: int, *, now: float | None = None) -> None: ...

    async def seed_quota(
        self, key_id: str, limits: Limits, used: int, *, now: float | None = None
    ) -> None:
        """Start the current quota period's count at ``used`` unless it is already counted
        (the ledger's total, after a restart)."""
        ...

    async def close(self) -> None: ...
