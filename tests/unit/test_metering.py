"""``Metering`` and ``Meter``: admission (allow-list, limits, quota seeding) and one
ledger row per request, with the real in-memory limiter and a ledger that keeps rows."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from kathan.auth.principal import Principal
from kathan.errors import (
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)
from kathan.limits.base import Lease, Limits
from kathan.limits.memory import MemoryLimiter
from kathan.limits.redis import LimiterUnavailable
from kathan.service.metering import Metering
from kathan.store.ledger import UsageRow


@dataclass
class Ledger:
    rows: list[UsageRow] = field(default_factory=list)

    def record(self, row: UsageRow) -> None:
        self.rows.append(row)


def key(limits: Limits, models: frozenset[str] | None = None) -> Principal:
    return Principal(kind="key", is_admin=False, account_id="a1", key_id="k1",
                     key_prefix="sk-k1", models=models, limits=limits)


def metering(limiter: MemoryLimiter | None = None, quota_used: int = 0) -> tuple[Metering, Ledger]:
    ledger = Ledger()

    async def used(key_id: str, day: str) -> int:
        return quota_used

    return Metering(limiter or MemoryLimiter(), ledger, used), ledger  # type: ignore[arg-type]


async def test_a_finished_request_writes_one_row_and_frees_its_place() -> None:
    limiter = MemoryLimiter()
    m, ledger = metering(limiter)
    principal = key(Limits(max_concurrent=1))
    meter = m.begin(principal, streamed=True)
    await meter.admit("m1")
    with pytest.raises(RateLimitError):  # its one place is taken
        await m.begin(principal, streamed=False).admit("m1")
    await meter.finish("succeeded", prompt_tokens=7, completion_tokens=5, finish_reason="stop")
    await meter.finish("succeeded", prompt_tokens=99)  # a second ending changes nothing
    await meter.fail(ServiceUnavailableError("late", retry_after=1))
    # The place is free as soon as finish returned: the next request is admitted.
    await m.begin(principal, streamed=False).admit("m1")
    [row] = ledger.rows  # one row, however often the meter was ended
    assert row.id == meter.request_id
    assert (row.status, row.http_status, row.prompt_tokens, row.completion_tokens) == (
        "succeeded", 200, 7, 5)
    assert (row.model, row.key_id, row.account_id, row.streamed) == ("m1", "k1", "a1", True)


async def test_refusals_name_their_reason() -> None:
    m, _ = metering()
    with pytest.raises(PermissionDeniedError) as denied:
        await m.begin(key(Limits(), models=frozenset({"other"})), streamed=False).admit("m1")
    assert denied.value.code == "model_not_allowed"
    # An alias on the allow-list admits the model it names.
    await m.begin(key(Limits(), models=frozenset({"short"})), streamed=False).admit(
        "m1", aliases=("short",))


async def test_a_rate_limited_request_is_recorded_as_such() -> None:
    m, ledger = metering()
    principal = key(Limits(rpm=1))
    await m.begin(principal, streamed=False).admit("m1")
    refused = m.begin(principal, streamed=False)
    with pytest.raises(RateLimitError) as exc:
        await refused.admit("m1")
    assert exc.value.limit == "rpm" and exc.value.headers["Retry-After"].isdigit()
    await refused.fail(exc.value)
    assert [(r.status, r.http_status, r.error_code) for r in ledger.rows] == [
        ("rate_limited", 429, "rate_limit_exceeded")]


async def test_tokens_count_against_the_quota_seeded_from_the_ledger() -> None:
    m, _ = metering(quota_used=95)
    principal = key(Limits(quota_tokens=100, quota_period="day"))
    meter = m.begin(principal, streamed=False)
    await meter.admit("m1")  # 95 of 100 used: still admitted
    await meter.finish("succeeded", prompt_tokens=3, completion_tokens=4)
    await m.drain()  # the lease holds no concurrency place: released in the background
    with pytest.raises(RateLimitError) as exc:
        await m.begin(principal, streamed=False).admit("m1")
    assert exc.value.limit == "quota"


async def test_an_unreachable_limiter_is_a_503_not_a_waiver() -> None:
    class Down(MemoryLimiter):
        async def acquire(self, key_id: str, limits: Limits, *,
                          now: float | None = None) -> Lease:
            raise LimiterUnavailable("refused")

    m, _ = metering(Down())
    with pytest.raises(ServiceUnavailableError) as exc:
        await m.begin(key(Limits(rpm=5)), streamed=False).admit("m1")
    assert exc.value.code == "limiter_unavailable" and "Retry-After" in exc.value.headers


async def test_releases_during_a_limiter_outage_add_no_line_per_request(
        caplog: pytest.LogCaptureFixture) -> None:
    class Failing(MemoryLimiter):
        error: Exception = LimiterUnavailable("refused")

        async def release(self, lease: Lease, tokens: int, *,
                          now: float | None = None) -> None:
            raise self.error

    limiter = Failing()
    m, ledger = metering(limiter)
    principal = key(Limits(max_concurrent=10))
    with caplog.at_level(logging.WARNING, logger="kathan.service.metering"):
        for _ in range(5):  # admitted before the outage, ended during it
            meter = m.begin(principal, streamed=False)
            await meter.admit("m1")
            await meter.finish("succeeded", prompt_tokens=1)
        assert caplog.records == []  # the limiter's own begin and end lines say it
        limiter.error = RuntimeError("a bug")
        meter = m.begin(principal, streamed=False)
        await meter.admit("m1")
        await meter.finish("succeeded", prompt_tokens=1)
    assert [r.getMessage() for r in caplog.records] == ["releasing a rate-limit lease failed"]
    assert len(ledger.rows) == 6  # every request still has its row


async def test_a_caller_without_limits_takes_no_lease() -> None:
    class Counting(MemoryLimiter):
        calls = 0

        async def acquire(self, key_id: str, limits: Limits, *,
                          now: float | None = None) -> Lease:
            Counting.calls += 1
            return await super().acquire(key_id, limits, now=now)

    m, ledger = metering(Counting())
    meter = m.begin(key(Limits()), streamed=False)
    await meter.admit("m1")
    await meter.finish("cancelled", http_status=499, error_code="client_disconnected")
    assert Counting.calls == 0
    assert [(r.status, r.http_status) for r in ledger.rows] == [("cancelled", 499)]


async def test_requests_that_arrive_together_seed_a_quota_with_one_query() -> None:
    queries = 0
    answer = asyncio.Event()

    async def used(key_id: str, day: str) -> int:
        nonlocal queries
        queries += 1
        await answer.wait()
        return 95

    m = Metering(MemoryLimiter(), Ledger(), used)  # type: ignore[arg-type]
    principal = key(Limits(quota_tokens=100, quota_period="day"))
    admitting = [asyncio.create_task(m.begin(principal, streamed=False).admit("m1"))
                 for _ in range(20)]
    await asyncio.sleep(0.01)
    admitting[0].cancel()  # a client that left does not cancel the others' query
    answer.set()
    results = await asyncio.gather(*admitting, return_exceptions=True)
    assert queries == 1
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(r is None for r in results[1:])
    await m.begin(principal, streamed=False).admit("m1")  # seeded: no query
    assert queries == 1


async def test_a_failed_seed_query_is_asked_again_by_the_next_request() -> None:
    calls = 0

    async def used(key_id: str, day: str) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("store down")
        return 0

    m = Metering(MemoryLimiter(), Ledger(), used)  # type: ignore[arg-type]
    principal = key(Limits(quota_tokens=100, quota_period="day"))
    with pytest.raises(OSError):
        await m.begin(principal, streamed=False).admit("m1")
    await m.begin(principal, streamed=False).admit("m1")
    assert calls == 2
