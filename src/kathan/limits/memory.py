"""Limits kept in this process: one replica, or tests.

The rules both limiters share (windows, refusal order, messages, quota
periods) live here too; ``RedisLimiter`` applies the same ones in Lua.

Refusal order: when several limits are reached, the first of quota, rpm,
tpm, max_concurrent is reported. Quota first, because it needs a new period
or an operator. Then the windows, whose ``retry_after`` is exact. Concurrency
last: its ``retry_after`` of 1 is a guess, and reporting it while a window
is also full would tell the client to come back long before it can succeed.
"""

from __future__ import annotations

import bisect
import functools
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from kathan.errors import RateLimitError
from kathan.ids import random_id
from kathan.limits.base import Lease, Limits, Window

WINDOW = 60.0  # seconds covered by rpm and tpm
_SLACK = 1e-6  # float error in ``until - now`` must not add a whole second
_SWEEP_EVERY = 1024  # calls between full sweeps of idle keys


def retry_after(until: float, now: float) -> int:
    """Whole seconds from ``now`` until ``until``, at least 1."""
    return max(1, math.ceil(until - now - _SLACK))


@dataclass(frozen=True, slots=True)
class QuotaWindow:
    """The UTC calendar period a quota counts in: ``label`` names it, ``end`` is its end."""

    label: str  # "2024-05-31" for a day, "2024-05" for a month
    end: float


def quota_window(limits: Limits, now: float) -> QuotaWindow | None:
    """The current quota period, or None when the key has no quota."""
    if limits.quota_tokens is None:
        return None
    if limits.quota_period is None:
        raise ValueError("quota_tokens is set without quota_period ('day' or 'month')")
    return _period(limits.quota_period, math.floor(now / 86400))


@functools.lru_cache(maxsize=64)
def _period(period: str, day_number: int) -> QuotaWindow:
    """The period holding UTC day ``day_number`` (days since the epoch); periods start at
    midnight, so the day decides it, and the answer is computed once per day."""
    t = datetime.fromtimestamp(day_number * 86400, UTC)
    if period == "day":
        return QuotaWindow(t.strftime("%Y-%m-%d"), (t + timedelta(days=1)).timestamp())
    end = datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)
    return QuotaWindow(t.strftime("%Y-%m"), end.timestamp())


_RATES = {
    "rpm": "requests per minute",
    "tpm": "tokens per minute",
    "max_concurrent": "concurrent requests",
}


def refusal(limit: str, limits: Limits, used: int, wait: int) -> RateLimitError:
    """The error for a reached ``limit`` ("quota", "rpm", "tpm" or "max_concurrent")."""
    wait = max(1, wait)
    if limit == "quota":
        message = (
            f"Token quota reached for this {limits.quota_period}: "
            f"limit {limits.quota_tokens} tokens, used {used}. Retry after {wait} s."
        )
    else:
        cap = {"rpm": limits.rpm, "tpm": limits.tpm, "max_concurrent": limits.max_concurrent}
        message = (
            f"Rate limit reached for {_RATES[limit]} ({limit}): "
            f"limit {cap[limit]}, used {used}. Retry after {wait} s."
        )
    return RateLimitError(message, limit=limit, retry_after=wait)


def _tpm_wait(buckets: list[tuple[int, int]], total: int, tpm: int, now: float) -> int:
    """Seconds until enough ``(second, tokens)`` buckets leave the window for ``total < tpm``."""
    for second, tokens in sorted(buckets):
        total -= tokens
        if total < tpm:
            return retry_after(second + WINDOW, now)
    return math.ceil(WINDOW)  # tpm == 0: nothing will ever fit


def _rpm_wait(times: Sequence[float], rpm: int, now: float) -> int:
    """Seconds until the window of sorted admission ``times`` has room for one more."""
    if rpm == 0:
        return math.ceil(WINDOW)
    return retry_after(times[len(times) - rpm] + WINDOW, now)


@dataclass(slots=True)
class _KeyState:
    """One key's windows. ``tokens`` and ``leases`` are kept in ascending order of their
    values' times (``add_tokens`` and ``add_lease`` see to it), so pruning stops at
    the first entry still inside its window instead of visiting every entry."""

    requests: deque[float] = field(default_factory=deque)  # admission times, ascending
    tokens: dict[int, int] = field(default_factory=dict)  # second of release -> tokens
    token_total: int = 0  # the sum of ``tokens``
    leases: dict[str, float] = field(default_factory=dict)  # lease id -> expiry

    def prune(self, now: float) -> None:
        cutoff = now - WINDOW
        requests = self.requests
        while requests and requests[0] <= cutoff:
            requests.popleft()
        tokens = self.tokens
        while tokens:
            second = next(iter(tokens))
            if second > cutoff:
                break
            self.token_total -= tokens.pop(second)
        leases = self.leases
        while leases:
            lease_id = next(iter(leases))
            if leases[lease_id] > now:
                break
            del leases[lease_id]

    def add_tokens(self, second: int, tokens: int) -> None:
        last = next(reversed(self.tokens), None)
        self.tokens[second] = self.tokens.get(second, 0) + tokens
        self.token_total += tokens
        if last is not None and second < last:  # a clock that stepped back
            self.tokens = dict(sorted(self.tokens.items()))

    def add_lease(self, lease_id: str, expiry: float) -> None:
        last = next(reversed(self.leases.values()), None)
        self.leases[lease_id] = expiry
        if last is not None and expiry < last:  # a clock that stepped back
            self.leases = dict(sorted(self.leases.items(), key=lambda item: item[1]))

    @property
    def idle(self) -> bool:
        return not (self.requests or self.tokens or self.leases)


@dataclass(slots=True)
class _Quota:
    label: str
    end: float
    used: int


class MemoryLimiter:
    """A ``Limiter`` whose counts live in this process.

    Each check-and-commit runs without an await, so it is atomic on one event
    loop. Old entries are pruned on every access, and a key with empty
    windows and no leases is forgotten. A lease not released within
    ``lease_ttl`` seconds stops holding its slot.
    """

    def __init__(self, *, lease_ttl: float = 600.0) -> None:
        if lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be > 0 seconds, got {lease_ttl}")
        self._lease_ttl = lease_ttl
        self._keys: dict[str, _KeyState] = {}
        self._quotas: dict[str, _Quota] = {}
        self._calls = 0

    async def acquire(self, key_id: str, limits: Limits, *, now: float | None = None) -> Lease:
        lease = Lease(key_id, random_id(), limits)
        if limits.none:
            return lease
        now = time.time() if now is None else now
        self._tick(now)
        state = self._keys.get(key_id) or _KeyState()
        state.prune(now)
        refused = self._check(key_id, state, limits, now)
        if refused is not None:
            self._store(key_id, state)  # pruning may have left nothing to keep
            raise refused
        if limits.rpm is not None:
            if state.requests and now < state.requests[-1]:
                bisect.insort(state.requests, now)  # a clock that stepped back
            else:
                state.requests.append(now)
        if limits.max_concurrent is not None:
            state.add_lease(lease.lease_id, now + self._lease_ttl)
        self._store(key_id, state)
        if limits.rpm is None and limits.tpm is None:
            return lease
        return replace(lease, window=Window(
            remaining_requests=None if limits.rpm is None else
            max(0, limits.rpm - len(state.requests)),
            reset_requests=None if limits.rpm is None else
            max(0.0, state.requests[0] + WINDOW - now),
            remaining_tokens=None if limits.tpm is None else
            max(0, limits.tpm - state.token_total),
            reset_tokens=None if limits.tpm is None else
            max(0.0, min(state.tokens, default=now - WINDOW) + WINDOW - now),
        ))

    def _check(
        self, key_id: str, state: _KeyState, limits: Limits, now: float
    ) -> RateLimitError | None:
        """The refusal for the first reached limit, in the module's order; None if all pass."""
        window = quota_window(limits, now)
        if window is not None and limits.quota_tokens is not None:
            quota = self._quotas.get(key_id)  # read only: a check must not start a period
            used = quota.used if quota is not None and quota.label == window.label else 0
            if used >= limits.quota_tokens:
                return refusal("quota", limits, used, retry_after(window.end, now))
        if limits.rpm is not None and len(state.requests) >= limits.rpm:
            wait = _rpm_wait(state.requests, limits.rpm, now)
            return refusal("rpm", limits, len(state.requests), wait)
        if limits.tpm is not None:
            total = state.token_total
            if total >= limits.tpm:
                wait = _tpm_wait(list(state.tokens.items()), total, limits.tpm, now)
                return refusal("tpm", limits, total, wait)
        if limits.max_concurrent is not None and len(state.leases) >= limits.max_concurrent:
            return refusal("max_concurrent", limits, len(state.leases), 1)
        return None

    async def release(self, lease: Lease, tokens: int, *, now: float | None = None) -> None:
        """Free the lease's slot (once, however often called) and count ``tokens``.

        Tokens are counted on every call: release each lease once.
        """
        limits = lease.limits
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        if limits.none:
            return
        now = time.time() if now is None else now
        self._tick(now)
        state = self._keys.get(lease.key_id) or _KeyState()
        state.leases.pop(lease.lease_id, None)
        if tokens and limits.tpm is not None:
            state.add_tokens(math.floor(now), tokens)
        window = quota_window(limits, now)
        if tokens and window is not None:
            self._quota(lease.key_id, window).used += tokens
        state.prune(now)
        self._store(lease.key_id, state)

    async def seed_quota(
        self, key_id: str, limits: Limits, used: int, *, now: float | None = None
    ) -> None:
        now = time.time() if now is None else now
        window = quota_window(limits, now)
        if window is None:
            return
        current = self._quotas.get(key_id)
        if current is None or current.label != window.label:
            self._quotas[key_id] = _Quota(window.label, window.end, used)

    async def close(self) -> None:
        self._keys.clear()
        self._quotas.clear()

    def _quota(self, key_id: str, window: QuotaWindow) -> _Quota:
        """This period's counter for the key; a counter of a past period starts over."""
        quota = self._quotas.get(key_id)
        if quota is None or quota.label != window.label:
            quota = self._quotas[key_id] = _Quota(window.label, window.end, 0)
        return quota

    def _store(self, key_id: str, state: _KeyState) -> None:
        if state.idle:
            self._keys.pop(key_id, None)
        else:
            self._keys[key_id] = state

    def _tick(self, now: float) -> None:
        """Every so often, forget keys nobody has touched since their entries aged out."""
        self._calls += 1
        if self._calls % _SWEEP_EVERY:
            return
        for key_id, state in list(self._keys.items()):
            state.prune(now)
            self._store(key_id, state)
        for key_id in [k for k, q in self._quotas.items() if q.end <= now]:
            del self._quotas[key_id]
