"""Per-key rate limits and quotas, in this process or shared through Redis."""

from __future__ import annotations

from kathan.limits.base import Lease, Limiter, Limits
from kathan.limits.memory import MemoryLimiter
from kathan.limits.redis import LimiterUnavailable, RedisLimiter

__all__ = [
    "Lease",
    "Limiter",
    "LimiterUnavailable",
    "Limits",
    "MemoryLimiter",
    "RedisLimiter",
    "make_limiter",
]


def make_limiter(
    redis_url: str | None, *, prefix: str = "kathan:", lease_ttl: float = 600.0
) -> Limiter:
    """The limiter for this deployment: shared through Redis when there is one.

    Without a Redis URL the counts stay in this process (one replica); with one,
    a ``RedisLimiter`` shares them with every replica.

    >>> type(make_limiter(None)).__name__
    'MemoryLimiter'
    """
    if redis_url is None:
        return MemoryLimiter(lease_ttl=lease_ttl)
    return RedisLimiter(redis_url, prefix=prefix, lease_ttl=lease_ttl)
