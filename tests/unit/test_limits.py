"""Both limiters against the same rules: in-process, and a real Redis shared by replicas.

Time is driven through ``now=``; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from kathan.errors import RateLimitError
from kathan.limits import (
    Lease,
    Limiter,
    LimiterUnavailable,
    Limits,
    MemoryLimiter,
    RedisLimiter,
    make_limiter,
)
from kathan.limits.base import QuotaPeriod
from kathan.limits.memory import quota_window
from tests.services import require_redis

LEASE_TTL = 30.0
T0 = datetime(2024, 5, 14, 12, 0, 0, tzinfo=UTC).timestamp()  # on a minute boundary
KEY = "key_abc"

ReplicaFactory = Callable[[], RedisLimiter]


async def _delete_prefix(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@asynccontextmanager
async def redis_replicas() -> AsyncIterator[ReplicaFactory]:
    """Makes RedisLimiters sharing one Redis and a prefix unique to the test; cleans up after."""
    url = require_redis()
    prefix = f"kathan-test-{uuid.uuid4().hex}:"
    made: list[RedisLimiter] = []

    def make() -> RedisLimiter:
        made.append(RedisLimiter(url, prefix=prefix, lease_ttl=LEASE_TTL))
        return made[-1]

    try:
        yield make
    finally:
        await _delete_prefix(url, prefix)
        for limiter in made:
            await limiter.close()


@pytest.fixture
async def replicas() -> AsyncIterator[ReplicaFactory]:
    async with redis_replicas() as make:
        yield make


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        memory = MemoryLimiter(lease_ttl=LEASE_TTL)
        yield memory
        await memory.close()
        return
    async with redis_replicas() as make:
        yield make()


async def refused(limiter: Limiter, limits: Limits, now: float, key: str = KEY) -> RateLimitError:
    with pytest.raises(RateLimitError) as info:
        await limiter.acquire(key, limits, now=now)
    return info.value


async def admitted(limiter: Limiter, limits: Limits, now: float, key: str = KEY) -> bool:
    try:
        await limiter.acquire(key, limits, now=now)
    except RateLimitError:
        return False
    return True


# rpm


async def test_rpm_admits_exactly_rpm_in_a_sliding_window(limiter: Limiter) -> None:
    limits = Limits(rpm=10)
    for i in range(10):
        await limiter.acquire(KEY, limits, now=T0 + i)

    error = await refused(limiter, limits, T0 + 20)
    assert error.limit == "rpm"
    assert error.retry_after == 40  # the entry of T0 leaves at T0 + 60
    assert error.headers["Retry-After"] == "40"
    assert error.message == (
        "Rate limit reached for requests per minute (rpm): limit 10, used 10. Retry after 40 s."
    )
    assert error.status_code == 429

    assert (await refused(limiter, limits, T0 + 59.5)).retry_after == 1
    assert await admitted(limiter, limits, T0 + 60)
    assert (await refused(limiter, limits, T0 + 60.2)).retry_after == 1  # T0 + 1 leaves at 61
    assert await admitted(limiter, limits, T0 + 61)


async def test_rpm_burst_across_a_minute_boundary_still_admits_only_rpm(
    limiter: Limiter,
) -> None:
    limits = Limits(rpm=10)
    boundary = T0 + 60
    attempts = [boundary - 3 + k * 0.25 for k in range(240)]  # boundary - 3 .. boundary + 56.75
    results = [await admitted(limiter, limits, t) for t in attempts]
    # A fixed window would admit 10 more at the boundary; a sliding one waits for the burst.
    assert [t for t, ok in zip(attempts, results, strict=True) if ok] == attempts[:10]
    assert await admitted(limiter, limits, boundary - 3 + 60)


async def test_rpm_counts_keys_separately(limiter: Limiter) -> None:
    limits = Limits(rpm=1)
    await limiter.acquire("key_a", limits, now=T0)
    await limiter.acquire("key_b", limits, now=T0)
    await refused(limiter, limits, T0 + 1, key="key_a")


# tpm


async def test_tpm_refuses_once_released_tokens_reach_it_and_recovers(limiter: Limiter) -> None:
    limits = Limits(tpm=1000)
    await limiter.release(await limiter.acquire(KEY, limits, now=T0), 600, now=T0 + 1)
    await limiter.release(await limiter.acquire(KEY, limits, now=T0 + 2), 420, now=T0 + 3.7)

    error = await refused(limiter, limits, T0 + 10)
    assert error.limit == "tpm"
    assert error.retry_after == 51  # the 600 tokens of T0 + 1 leave at T0 + 61: 420 < 1000
    assert "tokens per minute (tpm): limit 1000, used 1020" in error.message

    assert (await refused(limiter, limits, T0 + 60.5)).retry_after == 1
    assert await admitted(limiter, limits, T0 + 61)


async def test_tpm_at_exactly_the_limit_refuses(limiter: Limiter) -> None:
    limits = Limits(tpm=100)
    lease = await limiter.acquire(KEY, limits, now=T0)
    await limiter.release(lease, 100, now=T0)
    assert (await refused(limiter, limits, T0 + 30)).retry_after == 30


# max_concurrent


async def test_max_concurrent_slots_are_freed_once_by_release(limiter: Limiter) -> None:
    limits = Limits(max_concurrent=2)
    a = await limiter.acquire(KEY, limits, now=T0)
    b = await limiter.acquire(KEY, limits, now=T0)

    error = await refused(limiter, limits, T0)
    assert error.limit == "max_concurrent"
    assert error.retry_after == 1
    assert "concurrent requests (max_concurrent): limit 2" in error.message

    await limiter.release(a, 0, now=T0 + 1)
    c = await limiter.acquire(KEY, limits, now=T0 + 1)
    await limiter.release(a, 0, now=T0 + 2)  # twice: frees nothing more
    await refused(limiter, limits, T0 + 2)
    await limiter.release(b, 0, now=T0 + 3)
    await limiter.acquire(KEY, limits, now=T0 + 3)
    await limiter.release(c, 0, now=T0 + 3)


async def test_an_unreleased_lease_frees_its_slot_after_lease_ttl(limiter: Limiter) -> None:
    limits = Limits(max_concurrent=1)
    await limiter.acquire(KEY, limits, now=T0)  # its holder never releases it
    await refused(limiter, limits, T0 + LEASE_TTL - 1)
    assert await admitted(limiter, limits, T0 + LEASE_TTL)


# quota


async def test_daily_quota_refuses_until_the_next_utc_day(limiter: Limiter) -> None:
    limits = Limits(quota_tokens=1000, quota_period="day")
    now = datetime(2024, 5, 14, 23, 0, 0, tzinfo=UTC).timestamp()
    await limiter.release(await limiter.acquire(KEY, limits, now=now), 1200, now=now)

    error = await refused(limiter, limits, now + 10)
    assert error.limit == "quota"
    assert error.retry_after == 3590
    assert error.message == (
        "Token quota reached for this day: limit 1000 tokens, used 1200. Retry after 3590 s."
    )
    assert await admitted(limiter, limits, now + 3600)  # 2024-05-15 00:00 UTC


async def test_monthly_quota_refuses_until_the_first_of_next_month(limiter: Limiter) -> None:
    limits = Limits(quota_tokens=1000, quota_period="month")
    now = datetime(2024, 12, 31, 12, 0, 0, tzinfo=UTC).timestamp()
    await limiter.release(await limiter.acquire(KEY, limits, now=now), 999, now=now)
    lease = await limiter.acquire(KEY, limits, now=now + 1)  # 999 < 1000
    await limiter.release(lease, 1, now=now + 1)

    error = await refused(limiter, limits, now + 2)
    assert error.limit == "quota"
    assert error.retry_after == 12 * 3600 - 2
    assert "Token quota reached for this month: limit 1000 tokens, used 1000." in error.message
    assert await admitted(limiter, limits, now + 12 * 3600)  # 2025-01-01 00:00 UTC


async def test_seed_quota_starts_a_period_but_never_overwrites_it(limiter: Limiter) -> None:
    limits = Limits(quota_tokens=1000, quota_period="day")
    await limiter.acquire(KEY, limits, now=T0 - 1)  # checked, but nothing counted yet
    await limiter.seed_quota(KEY, limits, 900, now=T0)
    await limiter.seed_quota(KEY, limits, 0, now=T0 + 1)  # already counted: ignored
    lease = await limiter.acquire(KEY, limits, now=T0 + 2)
    await limiter.release(lease, 150, now=T0 + 3)
    assert "used 1050" in (await refused(limiter, limits, T0 + 4)).message

    await limiter.seed_quota(KEY, limits, 0, now=T0 + 5)
    await refused(limiter, limits, T0 + 6)

    tomorrow = T0 + 86400
    await limiter.seed_quota(KEY, limits, 1000, now=tomorrow)  # a new period: seeded
    assert (await refused(limiter, limits, tomorrow)).retry_after == 12 * 3600


def test_quota_periods_are_utc_calendar_days_and_months() -> None:
    def window(period: QuotaPeriod, when: datetime) -> tuple[str, datetime]:
        w = quota_window(Limits(quota_tokens=1, quota_period=period), when.timestamp())
        assert w is not None
        return w.label, datetime.fromtimestamp(w.end, UTC)

    def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
        return datetime(year, month, day, hour, minute, tzinfo=UTC)

    assert window("day", utc(2024, 2, 28, 23, 59)) == ("2024-02-28", utc(2024, 2, 29))
    assert window("month", utc(2024, 2, 29, 1)) == ("2024-02", utc(2024, 3, 1))
    assert window("month", utc(2024, 12, 31)) == ("2024-12", utc(2025, 1, 1))
    assert quota_window(Limits(rpm=1), T0) is None
    with pytest.raises(ValueError, match="quota_period"):
        quota_window(Limits(quota_tokens=1), T0)


# all limits together


async def test_a_refused_request_consumes_nothing(limiter: Limiter) -> None:
    limits = Limits(rpm=2, max_concurrent=1)
    a = await limiter.acquire(KEY, limits, now=T0)
    assert (await refused(limiter, limits, T0 + 1)).limit == "max_concurrent"
    await limiter.release(a, 0, now=T0 + 2)
    c = await limiter.acquire(KEY, limits, now=T0 + 3)  # rpm holds a and c, not the refused one
    await limiter.release(c, 0, now=T0 + 4)
    error = await refused(limiter, limits, T0 + 5)
    assert (error.limit, error.retry_after) == ("rpm", 55)


async def test_several_reached_limits_report_quota_then_rpm_then_tpm_then_concurrency(
    limiter: Limiter,
) -> None:
    limits = Limits(rpm=1, tpm=10, max_concurrent=1, quota_tokens=10, quota_period="day")
    await limiter.release(await limiter.acquire(KEY, limits, now=T0), 10, now=T0)
    await limiter.acquire(KEY, Limits(max_concurrent=1), now=T0)  # the slot is taken again
    # All four are reached now; each limit left out uncovers the next.
    assert (await refused(limiter, limits, T0 + 1)).limit == "quota"
    assert (await refused(limiter, Limits(rpm=1, tpm=10, max_concurrent=1), T0 + 1)).limit == "rpm"
    assert (await refused(limiter, Limits(tpm=10, max_concurrent=1), T0 + 1)).limit == "tpm"
    assert (await refused(limiter, Limits(max_concurrent=1), T0 + 1)).limit == "max_concurrent"


async def test_no_limits_never_refuse(limiter: Limiter) -> None:
    leases: list[Lease] = []
    for i in range(200):
        leases.append(await limiter.acquire(KEY, Limits(), now=T0 + i / 100))
    for lease in leases:
        await limiter.release(lease, 10_000, now=T0 + 3)
    assert len({lease.lease_id for lease in leases}) == 200
    if isinstance(limiter, RedisLimiter):  # not a single round trip, so no key either
        assert [key async for key in limiter._client.scan_iter(match=f"{limiter._prefix}*")] == []


async def test_memory_forgets_idle_keys() -> None:
    limiter = MemoryLimiter()
    limits = Limits(rpm=5, tpm=100, max_concurrent=1)
    for i in range(50):
        lease = await limiter.acquire(f"key_{i}", limits, now=T0)
        await limiter.release(lease, 10, now=T0)
    assert len(limiter._keys) == 50  # each holds an rpm entry and tokens
    lease = await limiter.acquire("key_0", limits, now=T0 + 61)  # key_0 pruned, then counted
    await limiter.release(lease, 0, now=T0 + 62)
    assert "key_0" in limiter._keys  # its rpm entry of T0 + 61
    lease = await limiter.acquire("key_y", Limits(max_concurrent=1), now=T0 + 62)
    await limiter.release(lease, 0, now=T0 + 62)
    assert "key_y" not in limiter._keys  # nothing left to hold: forgotten at once
    await limiter.acquire("key_0", Limits(max_concurrent=1), now=T0 + 62)  # never released
    for i in range(1024):  # enough calls for a full sweep, after every window and lease ended
        await limiter.acquire("key_x", Limits(rpm=100_000), now=T0 + 1000 + i)
    assert set(limiter._keys) == {"key_x"}


async def test_memory_windows_age_out_in_time_order_after_the_clock_steps_back() -> None:
    limiter = MemoryLimiter(lease_ttl=LEASE_TTL)
    limits = Limits(tpm=1000, max_concurrent=2)
    late = await limiter.acquire(KEY, limits, now=T0 + 20)
    early = await limiter.acquire(KEY, limits, now=T0)  # the clock stepped back 20 s
    await limiter.release(await limiter.acquire(KEY, Limits(tpm=1000), now=T0 + 20), 600,
                          now=T0 + 20)
    await limiter.release(await limiter.acquire(KEY, Limits(tpm=1000), now=T0), 500, now=T0)
    # At T0 + 61 the tokens of T0 have left the window though they were counted last,
    # and at T0 + LEASE_TTL the earlier lease's slot is free though it was taken last.
    assert (await refused(limiter, Limits(max_concurrent=2), T0 + LEASE_TTL - 1)).limit == (
        "max_concurrent")
    assert await admitted(limiter, Limits(max_concurrent=2), T0 + LEASE_TTL)
    assert (await refused(limiter, Limits(tpm=1000), T0 + 40)).limit == "tpm"
    assert await admitted(limiter, Limits(tpm=1000), T0 + 61)
    del late, early


# Redis: replicas, expiry, outages


async def test_replicas_sharing_redis_admit_exactly_rpm(replicas: ReplicaFactory) -> None:
    one, two = replicas(), replicas()
    limits = Limits(rpm=10)
    results = await asyncio.gather(
        *((one if i % 2 else two).acquire(KEY, limits, now=T0 + i / 1000) for i in range(50)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Lease) for r in results) == 10
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 40
    assert all(isinstance(e, RateLimitError) and e.limit == "rpm" for e in errors)


async def test_a_dead_replicas_lease_frees_itself(replicas: ReplicaFactory) -> None:
    dead, alive = replicas(), replicas()
    limits = Limits(max_concurrent=1)
    await dead.acquire(KEY, limits, now=T0)
    await dead.close()  # killed: never releases
    await refused(alive, limits, T0 + 1)
    assert await admitted(alive, limits, T0 + LEASE_TTL)


async def test_every_redis_key_expires(replicas: ReplicaFactory) -> None:
    limiter = replicas()
    limits = Limits(rpm=5, tpm=100, max_concurrent=2, quota_tokens=1000, quota_period="month")
    await limiter.seed_quota("key_b", limits, 10, now=T0)
    await limiter.acquire(KEY, limits, now=T0)
    await limiter.release(await limiter.acquire(KEY, limits, now=T0), 50, now=T0)
    client = limiter._client
    keys = [key async for key in client.scan_iter(match=f"{limiter._prefix}*")]
    assert {k.decode().removeprefix(limiter._prefix) for k in keys} == {
        f"rpm:{KEY}", f"tpm:{KEY}", f"conc:{KEY}", f"quota:{KEY}:2024-05", "quota:key_b:2024-05",
    }
    for key in keys:
        assert await client.pttl(key) > 0


async def test_unreachable_redis_raises_limiter_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    limiter = make_limiter(f"redis://127.0.0.1:{port}/0")
    try:
        limits = Limits(rpm=1, max_concurrent=1, quota_tokens=10, quota_period="day")
        with pytest.raises(LimiterUnavailable):
            await limiter.acquire(KEY, limits, now=T0)
        with pytest.raises(LimiterUnavailable):
            await limiter.release(Lease(KEY, "lease", limits), 5, now=T0)
        with pytest.raises(LimiterUnavailable):
            await limiter.seed_quota(KEY, limits, 5, now=T0)
        # No limits: no round trip, so no outage either.
        lease = await limiter.acquire(KEY, Limits(), now=T0)
        await limiter.release(lease, 5, now=T0)
    finally:
        await limiter.close()


def test_make_limiter_picks_memory_without_a_redis_url() -> None:
    assert isinstance(make_limiter(None), MemoryLimiter)


def test_quota_periods_start_on_the_first_utc_day() -> None:
    from kathan.service.metering import period_start

    late = datetime(2024, 5, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    assert period_start("day", late) == "2024-05-31"
    assert period_start("month", late) == "2024-05-01"
    assert period_start("day", late + 1) == "2024-06-01"
    assert period_start("month", late + 1) == "2024-06-01"


# where a key stands in its windows (x-ratelimit-* headers)


async def test_an_admission_says_what_is_left_of_the_windows(limiter: Limiter) -> None:
    limits = Limits(rpm=3, tpm=100)
    first = await limiter.acquire(KEY, limits, now=T0)
    assert first.window.remaining_requests == 2
    assert first.window.reset_requests == pytest.approx(60.0)
    assert (first.window.remaining_tokens, first.window.reset_tokens) == (100, 0.0)
    await limiter.release(first, 30, now=T0 + 1)
    second = await limiter.acquire(KEY, limits, now=T0 + 10)
    assert second.window.remaining_requests == 1
    assert second.window.reset_requests == pytest.approx(50.0)  # T0's request leaves at +60
    assert second.window.remaining_tokens == 70
    assert second.window.reset_tokens == pytest.approx(51.0)  # T0 + 1's tokens leave at +61
    plain = await limiter.acquire("other-key", Limits(max_concurrent=2), now=T0)
    assert plain.window.remaining_requests is None and plain.window.remaining_tokens is None


async def forward(port: int, url: str) -> asyncio.Server:
    """Start relaying 127.0.0.1:``port`` to the Redis at ``url``: Redis comes back."""
    host, _, target = url.split("://", 1)[1].split("/", 1)[0].rpartition(":")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host or "127.0.0.1", int(target))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer),
                             return_exceptions=True)

    return await asyncio.start_server(relay, "127.0.0.1", port)


async def test_a_limiter_outage_is_one_line_when_it_begins_and_one_when_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    url = require_redis()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there until forward() does
    prefix = f"kathan-test-{uuid.uuid4().hex}:"
    limiter = RedisLimiter(f"redis://127.0.0.1:{port}/{url.rsplit('/', 1)[1]}", prefix=prefix)
    limits = Limits(rpm=100, max_concurrent=100)
    relay = None
    try:
        with caplog.at_level(logging.WARNING, logger="kathan.limits.redis"):
            for _ in range(20):  # the real client, refused: Redis is down
                with pytest.raises(LimiterUnavailable):
                    await limiter.acquire(KEY, limits, now=T0)
            assert len(caplog.records) == 1
            begin = caplog.records[0].getMessage()
            assert begin.startswith("the rate limiter's Redis unreachable (")
            assert "503 limiter_unavailable until it is back" in begin
            relay = await forward(port, url)  # Redis is back
            for _ in range(3):
                await limiter.acquire(KEY, limits, now=T0)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2, lines
        assert lines[1].startswith("the rate limiter's Redis reachable again after")
        assert "(20 failed calls)" in lines[1]
    finally:
        await limiter.close()
        if relay is not None:
            relay.close()
            await relay.wait_closed()
        await _delete_prefix(url, prefix)
