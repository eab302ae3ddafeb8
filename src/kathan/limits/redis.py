"""Limits shared by every replica through one Redis.

Each ``acquire`` and ``release`` is one Lua script: one round trip, atomic
across replicas. The rules are ``kathan.limits.memory``'s, in the same order.

Times come from the caller (``now``, by default this replica's clock), never
from Redis ``TIME``, so tests can drive them; replicas' clocks are assumed to
be in sync (NTP), as a skew of a few seconds shifts the windows by as much.
Key expiries are relative TTLs computed from the same ``now``.

Keys, all with a TTL so an idle key vanishes:

- ``{prefix}rpm:{key_id}``: ZSET, lease id -> admission time
- ``{prefix}tpm:{key_id}``: HASH, second of release -> tokens released in it
- ``{prefix}conc:{key_id}``: ZSET, lease id -> expiry; an expired lease
  (its replica died before releasing) holds no slot
- ``{prefix}quota:{key_id}:{period}``: counter of tokens, period "2024-05-31" or "2024-05"

A script touches several of these keys, without a hash tag: one Redis (a
primary with replicas, or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kathan.ids import random_id
from kathan.limits.base import Lease, Limits, Window
from kathan.limits.memory import WINDOW, quota_window, refusal, retry_after
from kathan.outage import Outage

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_QUOTA_GRACE = 3600.0  # a quota key outlives its period by this much: clock skew
_WINDOW_TTL_MS = math.ceil(WINDOW * 1000) + 1000

# KEYS: quota, conc, rpm, tpm. ARGV: now, now - WINDOW, lease id, lease expiry,
# lease TTL ms, window TTL ms, then the limits quota, conc, rpm, tpm (-1: none).
# Returns {limit, used, retry_after}, with limit "ok" when admitted; the
# quota's retry_after is left to the caller, which knows the period's end. An
# admission returns {"ok", requests in the window (this one included), tokens in
# the window, the oldest request's time, the oldest token second} (-1: no limit).
_ACQUIRE = """
local now = tonumber(ARGV[1])
local cutoff = tonumber(ARGV[2])
local quota = tonumber(ARGV[7])
local conc = tonumber(ARGV[8])
local rpm = tonumber(ARGV[9])
local tpm = tonumber(ARGV[10])
local window = 60

local function wait(until_t)
  return math.max(1, math.ceil(until_t - now - 1e-6))
end
local requests, tokens, oldest_request, oldest_second = -1, -1, -1, -1

if quota >= 0 then
  local used = tonumber(redis.call('GET', KEYS[1]) or '0')
  if used >= quota then return {'quota', used, 0} end
end
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', cutoff)
  local n = redis.call('ZCARD', KEYS[3])
  if n >= rpm then
    if rpm == 0 then return {'rpm', n, window} end
    local edge = redis.call('ZRANGE', KEYS[3], n - rpm, n - rpm, 'WITHSCORES')
    return {'rpm', n, wait(tonumber(edge[2]) + window)}
  end
  requests = n + 1
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  oldest_request = first[2] and tonumber(first[2]) or now
end
if tpm >= 0 then
  local flat = redis.call('HGETALL', KEYS[4])
  local buckets = {}
  local total = 0
  for i = 1, #flat, 2 do
    local second = tonumber(flat[i])
    if second <= cutoff then
      redis.call('HDEL', KEYS[4], flat[i])
    else
      local tokens = tonumber(flat[i + 1])
      total = total + tokens
      table.insert(buckets, {second, tokens})
    end
  end
  if total >= tpm then
    table.sort(buckets, function(a, b) return a[1] < b[1] end)
    local left = total
    for _, bucket in ipairs(buckets) do
      left = left - bucket[2]
      if left < tpm then return {'tpm', total, wait(bucket[1] + window)} end
    end
    return {'tpm', total, window}
  end
  tokens = total
  for _, bucket in ipairs(buckets) do
    if oldest_second < 0 or bucket[1] < oldest_second then oldest_second = bucket[1] end
  end
end
if conc >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local n = redis.call('ZCARD', KEYS[2])
  if n >= conc then return {'max_concurrent', n, 1} end
end
if rpm >= 0 then
  redis.call('ZADD', KEYS[3], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
end
if conc >= 0 then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
return {'ok', requests, tokens, tostring(oldest_request), oldest_second}
"""

# KEYS: conc, tpm, quota. ARGV: lease id, tokens, second, window TTL ms,
# quota TTL ms, then flags "1"/"0": conc, tpm, quota are limited.
_RELEASE = """
if ARGV[6] == '1' then redis.call('ZREM', KEYS[1], ARGV[1]) end
local tokens = tonumber(ARGV[2])
if tokens > 0 and ARGV[7] == '1' then
  redis.call('HINCRBY', KEYS[2], ARGV[3], tokens)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
if tokens > 0 and ARGV[8] == '1' then
  redis.call('INCRBY', KEYS[3], tokens)
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
return 0
"""


class LimiterUnavailable(Exception):
    """Redis could not be reached (refused, reset, or timed out)."""


def _num(limit: int | None) -> int:
    return -1 if limit is None else limit


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLimiter:
    """A ``Limiter`` whose counts live in Redis, shared by all replicas.

    Replicas sharing one Redis (and ``prefix``) together admit exactly
    ``rpm`` requests a minute. A lease not released within ``lease_ttl``
    seconds (its replica was killed) stops holding its slot. Connection
    failures raise ``LimiterUnavailable``.

    ``RedisLimiter(url)`` makes and owns its client, which ``close`` closes;
    ``RedisLimiter.from_client(client)`` uses a client you own: ``close``
    leaves it open.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "kathan:",
        lease_ttl: float = 600.0,
        timeout: float = 2.0,
    ) -> None:
        # Few, quick retries: this is on every request's path, and a retried
        # script may have run once already (an over-count, never an under-count).
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=1),
        )
        self._setup(client, prefix=prefix, lease_ttl=lease_ttl, owns_client=True)

    @classmethod
    def from_client(
        cls, client: aioredis.Redis, *, prefix: str = "kathan:", lease_ttl: float = 600.0
    ) -> RedisLimiter:
        """A limiter on an existing client, which ``close`` does not close."""
        self = cls.__new__(cls)
        self._setup(client, prefix=prefix, lease_ttl=lease_ttl, owns_client=False)
        return self

    def _setup(
        self, client: aioredis.Redis, *, prefix: str, lease_ttl: float, owns_client: bool
    ) -> None:
        if lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be > 0 seconds, got {lease_ttl}")
        self._client = client
        self._outage = Outage(
            "the rate limiter's Redis", "Requests of keys with limits get 503 "
            "limiter_unavailable until it is back.", logger)
        self._prefix = prefix
        self._lease_ttl = lease_ttl
        self._owns_client = owns_client
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    async def acquire(self, key_id: str, limits: Limits, *, now: float | None = None) -> Lease:
        lease = Lease(key_id, random_id(), limits)
        if limits.none:
            return lease
        now = time.time() if now is None else now
        window = quota_window(limits, now)
        keys = [
            self._quota_key(key_id, window.label if window else "-"),
            f"{self._prefix}conc:{key_id}",
            f"{self._prefix}rpm:{key_id}",
            f"{self._prefix}tpm:{key_id}",
        ]
        args: list[str | int] = [
            repr(now),
            repr(now - WINDOW),
            lease.lease_id,
            repr(now + self._lease_ttl),
            math.ceil(self._lease_ttl * 1000),
            _WINDOW_TTL_MS,
            _num(limits.quota_tokens),
            _num(limits.max_concurrent),
            _num(limits.rpm),
            _num(limits.tpm),
        ]
        reply = await self._call(self._acquire(keys=keys, args=args))
        limit = _text(reply[0])
        if limit == "ok":
            return _with_window(lease, limits, reply, now)
        used, wait = int(reply[1]), int(reply[2])
        if limit == "quota" and window is not None:
            wait = retry_after(window.end, now)
        raise refusal(limit, limits, used, wait)

    async def release(self, lease: Lease, tokens: int, *, now: float | None = None) -> None:
        """Free the lease's slot (once, however often called) and count ``tokens``.

        Tokens are counted on every call: release each lease once.
        """
        limits = lease.limits
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        counts = tokens > 0 and (limits.tpm is not None or limits.quota_tokens is not None)
        if limits.max_concurrent is None and not counts:
            return  # nothing to free or count: no round trip
        now = time.time() if now is None else now
        window = quota_window(limits, now)
        keys = [
            f"{self._prefix}conc:{lease.key_id}",
            f"{self._prefix}tpm:{lease.key_id}",
            self._quota_key(lease.key_id, window.label if window else "-"),
        ]
        quota_ttl = math.ceil((window.end - now + _QUOTA_GRACE) * 1000) if window else 0
        args: list[str | int] = [
            lease.lease_id,
            tokens,
            math.floor(now),
            _WINDOW_TTL_MS,
            quota_ttl,
            "0" if limits.max_concurrent is None else "1",
            "0" if limits.tpm is None else "1",
            "0" if window is None else "1",
        ]
        await self._call(self._release(keys=keys, args=args))

    async def seed_quota(
        self, key_id: str, limits: Limits, used: int, *, now: float | None = None
    ) -> None:
        now = time.time() if now is None else now
        window = quota_window(limits, now)
        if window is None:
            return
        ttl_ms = math.ceil((window.end - now + _QUOTA_GRACE) * 1000)
        key = self._quota_key(key_id, window.label)
        await self._call(self._client.set(key, used, nx=True, px=ttl_ms))

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _quota_key(self, key_id: str, label: str) -> str:
        return f"{self._prefix}quota:{key_id}:{label}"

    async def _call(self, pending: Awaitable[_T]) -> _T:
        try:
            result = await pending
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self._outage.failed(exc)
            raise LimiterUnavailable(f"Redis is unavailable for rate limits: {exc}") from exc
        self._outage.succeeded()
        return result


def _with_window(lease: Lease, limits: Limits, reply: list[Any], now: float) -> Lease:
    """The lease with where its key stands in its windows (the admission's reply)."""
    if limits.rpm is None and limits.tpm is None:
        return lease
    requests, tokens = int(reply[1]), int(reply[2])
    oldest_request, oldest_second = float(_text(reply[3])), int(reply[4])
    return replace(lease, window=Window(
        remaining_requests=None if limits.rpm is None else max(0, limits.rpm - requests),
        reset_requests=None if limits.rpm is None else max(0.0, oldest_request + WINDOW - now),
        remaining_tokens=None if limits.tpm is None else max(0, limits.tpm - tokens),
        reset_tokens=None if limits.tpm is None else (
            0.0 if oldest_second < 0 else max(0.0, oldest_second + WINDOW - now)),
    ))
