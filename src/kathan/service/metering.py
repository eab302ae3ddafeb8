"""Per-request admission (model allow-list, rate limits, quotas) and the ledger row.

Every model request (each endpoint) of a known caller ends in exactly one ``UsageRow``:
``succeeded``, ``failed`` (any error status), ``cancelled`` (the client left)
or ``rate_limited`` (429). Rows go to the ledger, which writes them later.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from kathan.auth.principal import Principal
from kathan.errors import (
    KathanError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)
from kathan.ids import random_id
from kathan.limits.base import Lease, Limiter, Limits
from kathan.limits.redis import LimiterUnavailable
from kathan.store.ledger import Status, UsageLedger, UsageRow

logger = logging.getLogger(__name__)

# (key id, first day of the period) -> tokens the key used since then, from the store.
QuotaSource = Callable[[str, str], Awaitable[int]]


def period_start(period: str, now: float) -> str:
    """The first UTC day of the quota ``period`` ("day" or "month") holding ``now``
    (a Unix time), as ``YYYY-MM-DD``."""
    return _period_start(period, math.floor(now / 86400))


@functools.lru_cache(maxsize=64)
def _period_start(period: str, day_number: int) -> str:
    day = datetime.fromtimestamp(day_number * 86400, UTC)  # computed once per day
    return day.strftime("%Y-%m-01") if period == "month" else day.strftime("%Y-%m-%d")


class Metering:
    """Creates a ``Meter`` for each chat request.

    ``begin(principal, streamed=...)`` makes the request's meter; ``await
    meter.admit(model, aliases)`` refuses a model the key may not use (403) or a
    request over its limits (429), and ``await meter.finish(...)`` or ``await
    meter.fail(error)`` gives its place back and records its ledger row (when there
    is a ledger), once.
    """

    def __init__(
        self, limiter: Limiter, ledger: UsageLedger | None, quota_source: QuotaSource | None
    ) -> None:
        self.limiter = limiter
        self.ledger = ledger
        self._quota_source = quota_source
        self._seeded: set[tuple[str, str]] = set()
        self._seeding: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._releases: set[asyncio.Task[None]] = set()

    def release(self, lease: Lease, tokens: int) -> None:
        """Give a lease back without making the request wait for the limiter's store
        (for leases that hold no concurrency slot: only their tokens are counted late)."""
        task = asyncio.create_task(self._release(lease, tokens))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, lease: Lease, tokens: int) -> None:
        try:
            await self.limiter.release(lease, tokens)
        except LimiterUnavailable:
            # Its store is down: the limiter logs that once for the whole outage (not a
            # traceback per request), and the lease there expires after its ttl.
            return
        except Exception:
            logger.exception("releasing a rate-limit lease failed")

    async def drain(self) -> None:
        """Wait for the releases still in flight (at shutdown)."""
        while self._releases:
            await asyncio.gather(*list(self._releases))

    def begin(
        self, principal: Principal, *, streamed: bool, request_id: str | None = None,
        endpoint: str = "chat/completions",
    ) -> Meter:
        """``endpoint``: the API the request came through, its path after ``/v1/``."""
        return Meter(self, principal, request_id or random_id(), streamed, endpoint)

    async def seed_quota(self, key_id: str, limits: Limits) -> None:
        """Start a key's quota count from the ledger, once per process and period."""
        if limits.quota_tokens is None or limits.quota_period is None:
            return
        if self._quota_source is None:
            return
        start = period_start(limits.quota_period, time.time())
        if (key_id, start) in self._seeded:
            return
        # One query per key and period, however many requests arrive before it answers:
        # a cold start under load made every one of them query the ledger, and the
        # first request of each of 200 clients waited seconds for the queue of queries.
        seeding = self._seeding.get((key_id, start))
        if seeding is None:
            seeding = asyncio.ensure_future(self._seed(key_id, limits, start))
            self._seeding[(key_id, start)] = seeding
            seeding.add_done_callback(lambda f: self._seeded_or_not(key_id, start, f))
        await asyncio.shield(seeding)

    def _seeded_or_not(self, key_id: str, start: str, seeding: asyncio.Future[None]) -> None:
        """The query is over: the next request asks again if it failed (its waiters got
        the error; one that nobody awaited any more is not left unretrieved)."""
        self._seeding.pop((key_id, start), None)
        if not seeding.cancelled():
            seeding.exception()

    async def _seed(self, key_id: str, limits: Limits, start: str) -> None:
        assert self._quota_source is not None
        used = await self._quota_source(key_id, start)
        await self.limiter.seed_quota(key_id, limits, used)
        self._seeded.add((key_id, start))


class Meter:
    """One request's admission and its ledger row. ``finish`` or ``fail`` ends it, once."""

    def __init__(
        self, metering: Metering, principal: Principal, request_id: str, streamed: bool,
        endpoint: str = "chat/completions",
    ) -> None:
        self._metering = metering
        self.principal = principal
        self.request_id = request_id
        self.streamed = streamed
        self.endpoint = endpoint
        self.model = ""
        self._started_wall = datetime.now(UTC)
        self._started = time.perf_counter()
        self._lease: Lease | None = None
        self._done = False

    async def admit(self, model: str, aliases: tuple[str, ...] = ()) -> None:
        """Check the allow-list and take a place within the key's limits."""
        self.model = model
        principal = self.principal
        if not principal.may_use(model, aliases):
            raise PermissionDeniedError(
                f"This API key may not use model '{model}'.", param="model",
                code="model_not_allowed",
            )
        limit_id = principal.limit_id
        if limit_id is None or principal.limits.none:
            return
        try:
            await self._metering.seed_quota(limit_id, principal.limits)
            self._lease = await self._metering.limiter.acquire(limit_id, principal.limits)
        except LimiterUnavailable as exc:
            # Limits that cannot be checked are not waived: the caller retries.
            raise ServiceUnavailableError(
                "Rate limits cannot be checked right now (the limiter's store is "
                "unreachable). Retry shortly.", retry_after=2, code="limiter_unavailable",
            ) from exc

    def rate_headers(self) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers for a key with RPM or TPM limits, as its
        windows stood when this request was admitted (empty otherwise)."""
        lease = self._lease
        if lease is None:
            return {}
        limits, window = lease.limits, lease.window
        headers: dict[str, str] = {}
        if limits.rpm is not None and window.remaining_requests is not None:
            headers["x-ratelimit-limit-requests"] = str(limits.rpm)
            headers["x-ratelimit-remaining-requests"] = str(window.remaining_requests)
            headers["x-ratelimit-reset-requests"] = duration(window.reset_requests or 0.0)
        if limits.tpm is not None and window.remaining_tokens is not None:
            headers["x-ratelimit-limit-tokens"] = str(limits.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(window.remaining_tokens)
            headers["x-ratelimit-reset-tokens"] = duration(window.reset_tokens or 0.0)
        return headers

    async def fail(
        self,
        error: KathanError,
        *,
        prompt_tokens: int = 0,
        cached_tokens: int = 0,
        completion_tokens: int = 0,
        ttft: float | None = None,
    ) -> None:
        """End with ``error``, charged the tokens consumed before it (0 when none were)."""
        status: Status = "rate_limited" if isinstance(error, RateLimitError) else "failed"
        await self._end(status, error.status_code, error_code=error.code,
                        prompt_tokens=prompt_tokens, cached_tokens=cached_tokens,
                        completion_tokens=completion_tokens, ttft=ttft)

    async def finish(
        self,
        status: Status,
        *,
        prompt_tokens: int = 0,
        cached_tokens: int = 0,
        completion_tokens: int = 0,
        ttft: float | None = None,
        finish_reason: str | None = None,
        http_status: int = 200,
        error_code: str | None = None,
    ) -> None:
        await self._end(
            status, http_status, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens,
            completion_tokens=completion_tokens, ttft=ttft, finish_reason=finish_reason,
            error_code=error_code,
        )

    async def _end(
        self,
        status: Status,
        http_status: int,
        *,
        prompt_tokens: int = 0,
        cached_tokens: int = 0,
        completion_tokens: int = 0,
        ttft: float | None = None,
        finish_reason: str | None = None,
        error_code: str | None = None,
    ) -> None:
        if self._done:
            return
        self._done = True
        latency = time.perf_counter() - self._started
        if self._lease is not None:
            tokens = prompt_tokens + completion_tokens
            limits = self._lease.limits
            if (limits.max_concurrent, limits.tpm, limits.quota_tokens) != (None, None, None):
                # The slot must be free, and the tokens counted, before this request's end
                # is done: a quota is then checked against them at the next admission.
                await self._metering._release(self._lease, tokens)
            else:
                self._metering.release(self._lease, tokens)
        ledger = self._metering.ledger
        if ledger is None:
            return
        p = self.principal
        ledger.record(UsageRow(
            id=self.request_id,
            created_at=self._started_wall,
            account_id=p.account_id,
            key_id=p.key_id,
            key_prefix=p.key_prefix,
            # The name a client sent (a 404 keeps it) as the store can hold it: its
            # column is String(200), and PostgreSQL's text has no NUL.
            model=self.model[:200].replace("\x00", ""),
            status=status,
            http_status=http_status,
            streamed=self.streamed,
            prompt_tokens=prompt_tokens,
            cached_tokens=cached_tokens,
            completion_tokens=completion_tokens,
            ttft_ms=None if ttft is None else ttft * 1000,
            latency_ms=latency * 1000,
            finish_reason=finish_reason,
            error_code=error_code,
            endpoint=self.endpoint,
        ))


def duration(seconds: float) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*``: ``250ms``, ``1.5s``,
    ``6m0s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"
