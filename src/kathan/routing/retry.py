"""What the router does after an upstream failed before its first byte, and how long
it waits before the next attempt."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kathan.backends.upstream import UpstreamError


class Verdict(enum.Enum):
    """What one failed attempt means for the request."""

    RETRY = "retry"  # a transport failure, timeout, 429 or 5xx: count it, wait, try again
    SKIP = "skip"  # the upstream refused Kathan's credentials: this deployment is out, now
    FINAL = "final"  # the upstream's answer about the request itself is the client's answer


def verdict(error: UpstreamError) -> Verdict:
    if error.upstream_status in (401, 403):
        return Verdict.SKIP
    return Verdict.RETRY if error.retryable else Verdict.FINAL


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` attempts after the first; the n-th wait (from 0) is
    ``backoff * 2**n`` seconds, or the upstream's ``Retry-After`` when it sent one,
    capped at twice that; either is scaled by a jitter factor between 0.5 and 1
    so that clients that failed together do not retry together.

    With ``backoff=0.1`` and failures without ``Retry-After`` the waits are at most
    0.1, 0.2, 0.4 s, and at least half that. An upstream
    asking for 7 s on the first retry gets 0.2 s at most: a client waiting for an
    answer is better served by another deployment, or a 429 it can act on.
    """

    retries: int
    backoff: float

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def delay(self, waited: int, retry_after: int | None, chance: float) -> float:
        """Seconds to wait after ``waited`` earlier waits in this request; ``chance``
        is a random number in [0, 1)."""
        base = self.backoff * 2.0**waited
        wait = base if retry_after is None else min(retry_after, 2 * base)
        return wait * (0.5 + chance / 2)
