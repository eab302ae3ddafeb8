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

    >>> limiter = make_limiter(None)  # one replica: counts stay in this process
    >>> limiter = make_limiter("redis://127.0.0.1:6379/0")  # shared by every replica
    """
    if redis_url is None:
        return MemoryLimiter(lease_ttl=lease_ttl)
    return RedisLimiter(redis_url, prefix=prefix, lease_ttl=lease_ttl)
