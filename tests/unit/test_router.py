"""The router and its parts (breaker, retry policy, picker) against scripted
backends, a fake clock and a sleep that only records how long it was asked for."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import pytest

from kathan.backends.base import Backend, Delta, DeltaStream, LoadStats
from kathan.backends.relay import BROKEN, StreamFailure
from kathan.backends.upstream import (
    Deployment,
    UpstreamConnectionLost,
    UpstreamError,
    UpstreamUnavailable,
    error_for_status,
    refuse_extras,
    transport_error,
)
from kathan.errors import InvalidRequestError, ServiceUnavailableError, UnsupportedParameterError
from kathan.protocol.chat import ChatCompletionRequest
from kathan.routing.breaker import Circuit, CircuitBreaker
from kathan.routing.capabilities import Capabilities
from kathan.routing.picker import Route, pick
from kathan.routing.retry import RetryPolicy, Verdict, verdict
from kathan.routing.router import Router, _deadline

REQUEST = ChatCompletionRequest.model_validate(
    {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
WITH_EXTRA = ChatCompletionRequest.model_validate(
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "guided_choice": ["a"]})


def bad_gateway() -> UpstreamError:
    return error_for_status(502, "bad gateway")


def silent_failure() -> UpstreamError:
    """A retryable failure without a Retry-After (``error_for_status`` always sets one)."""
    return UpstreamUnavailable("down", retryable=True, upstream_status=502)


def no_status_line() -> UpstreamError:
    """What ``upstream.send`` raises when the upstream was silent past read_timeout."""
    return UpstreamUnavailable("The upstream did not answer within the deployment's timeouts.",
                               retryable=True, retry_after=1, code="upstream_timeout")


def no_first_event() -> UpstreamError:
    """What the relay raises when the status line came and then nothing for read_timeout."""
    failure = StreamFailure("The upstream connection failed mid-stream: TimeoutError.",
                            code=BROKEN, retryable=True)
    failure.__cause__ = TimeoutError("the upstream sent nothing for 120 s")
    return failure


async def settle() -> None:
    """Let every task that can run, run (no real time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


class Scripted:
    """A backend that fails with the given errors, one per ``open``, then answers
    ``reply`` (breaking off with ``break_with`` after the first word when given)."""

    def __init__(
        self,
        *failures: UpstreamError,
        reply: str = "hello there",
        break_with: UpstreamError | None = None,
        refuses_extras: bool = False,
        answers_probe: bool | Exception = True,
    ) -> None:
        self.failures = list(failures)
        self.reply = reply
        self.break_with = break_with
        self.refuses_extras = refuses_extras
        self.answers_probe = answers_probe
        self.gate: asyncio.Event | None = None  # when set up, open waits for it
        self.entered = asyncio.Event()
        self.opens = 0  # calls to open
        self.streams = 0  # streams handed out
        self.closes = 0  # streams closed
        self.probes = 0

    @property
    def ready(self) -> bool:
        return True

    def stats(self) -> LoadStats | None:
        return None

    def check(self, request: ChatCompletionRequest) -> None:
        if self.refuses_extras:
            refuse_extras(request, "anthropic")

    async def probe(self) -> bool:
        self.probes += 1
        if isinstance(self.answers_probe, Exception):
            raise self.answers_probe
        return self.answers_probe

    async def open(self, request: ChatCompletionRequest) -> DeltaStream:
        self.check(request)
        self.opens += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.streams += 1
        return DeltaStream(self._deltas(), on_close=self._closed)

    def _closed(self) -> None:
        self.closes += 1

    async def _deltas(self) -> AsyncGenerator[Delta, None]:
        for i, word in enumerate(self.reply.split()):
            if i == 1 and self.break_with is not None:
                raise self.break_with
            yield Delta(content=word)
        yield Delta(finish_reason="stop")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeps:
    """Records each wait and moves the clock on; with ``hold`` it waits until cancelled."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.waits: list[float] = []
        self.hold = False
        self.entered = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.entered.set()
        if self.hold:
            await asyncio.Event().wait()
        self.clock.advance(seconds)


class Dice(random.Random):
    """Fixed jitter (``random()``); the tie-break is seeded."""

    def __init__(self, seed: int = 0, jitter: float = 0.0) -> None:
        super().__init__(seed)
        self.jitter = jitter

    def random(self) -> float:
        return self.jitter


def deployment(name: str, *, weight: float = 1.0, max_in_flight: int = 64) -> Deployment:
    return Deployment("openai", "m", weight=weight, max_in_flight=max_in_flight, name=name)


class Harness:
    """A router over ``backends`` with a fake clock, recorded sleeps and fixed jitter
    (factor 0.5: each wait is half its base)."""

    def __init__(
        self,
        *backends: Backend,
        retries: int = 2,
        backoff: float = 0.1,
        failures: int = 2,
        cooldown: float = 30.0,
        seed: int = 0,
        weights: Sequence[float] = (),
        max_in_flight: int = 64,
        **router: Any,
    ) -> None:
        self.clock = Clock()
        self.sleeps = Sleeps(self.clock)
        self.routes = [
            Route(deployment(f"m#{i}", weight=weights[i] if weights else 1.0,
                             max_in_flight=max_in_flight),
                  backend, CircuitBreaker(failures, cooldown))
            for i, backend in enumerate(backends)
        ]
        self.router = Router("m", self.routes, RetryPolicy(retries, backoff), clock=self.clock,
                             sleep=self.sleeps, rng=Dice(seed), **router)

    def in_flight(self) -> list[int]:
        return [r.in_flight for r in self.routes]

    def circuits(self) -> list[Circuit]:
        return [r.breaker.state(self.clock()) for r in self.routes]


async def answer(router: Backend, request: ChatCompletionRequest = REQUEST) -> str:
    async with await router.open(request) as stream:
        return " ".join([d.content async for d in stream if d.content])


# -- the parts ------------------------------------------------------------------------------


def test_breaker_opens_after_failures_in_a_row_and_half_opens_after_the_cooldown() -> None:
    breaker = CircuitBreaker(3, 10.0)
    assert not breaker.failed(0.0) and not breaker.failed(1.0)
    breaker.succeeded()  # a success in between starts the count again
    assert not breaker.failed(2.0) and not breaker.failed(3.0)
    assert breaker.state(3.0) is Circuit.CLOSED
    assert breaker.failed(4.0)
    assert breaker.state(4.0) is Circuit.OPEN and not breaker.allows(13.9)
    assert breaker.reopens_in(6.0) == 8.0
    assert breaker.state(14.0) is Circuit.HALF_OPEN and breaker.allows(14.0)
    assert breaker.reopens_in(14.0) == 0.0


def test_half_open_breaker_reopens_on_one_failure_and_closes_on_a_success() -> None:
    breaker = CircuitBreaker(3, 10.0)
    breaker.trip(0.0)
    assert breaker.state(0.0) is Circuit.OPEN
    assert breaker.half_open(5.0)  # a probe found the upstream answering
    assert breaker.state(5.0) is Circuit.HALF_OPEN
    assert breaker.failed(6.0)  # one failure is enough now
    assert breaker.state(15.9) is Circuit.OPEN and breaker.state(16.0) is Circuit.HALF_OPEN
    breaker.succeeded()
    assert breaker.state(16.0) is Circuit.CLOSED
    assert not breaker.failed(17.0)  # closed again: back to three in a row
    assert not breaker.half_open(17.0)  # only an open circuit half-opens


def test_backoff_doubles_honours_retry_after_up_to_twice_the_delay_and_jitters() -> None:
    policy = RetryPolicy(retries=3, backoff=0.1)
    assert [policy.delay(n, None, 1.0) for n in range(3)] == pytest.approx([0.1, 0.2, 0.4])
    assert policy.delay(0, None, 0.0) == pytest.approx(0.05)  # jitter: half at the least
    assert policy.delay(0, 7, 1.0) == pytest.approx(0.2)  # Retry-After capped at 2x
    assert RetryPolicy(1, backoff=2.0).delay(0, 1, 1.0) == pytest.approx(1.0)
    assert policy.attempts == 4


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (error_for_status(502, "x"), Verdict.RETRY),
        (error_for_status(429, "x"), Verdict.RETRY),
        (transport_error("refused"), Verdict.RETRY),
        (error_for_status(401, "x"), Verdict.SKIP),
        (error_for_status(403, "x"), Verdict.SKIP),
        (error_for_status(400, "x"), Verdict.FINAL),
        (error_for_status(307, "x", location="https://elsewhere"), Verdict.FINAL),
    ],
)
def test_verdicts(error: UpstreamError, expected: Verdict) -> None:
    assert verdict(error) is expected


def test_pick_prefers_least_load_per_weight_untried_and_usable() -> None:
    light, heavy, full = (Route(deployment(n, weight=w, max_in_flight=4), Scripted(),
                                CircuitBreaker(1, 10.0)) for n, w in
                          (("light", 1.0), ("heavy", 4.0), ("full", 1.0)))
    light.in_flight, heavy.in_flight, full.in_flight = 1, 2, 4
    routes = [light, heavy, full]

    def first(pool: Sequence[Route]) -> Route:
        return pool[0]

    assert pick(routes, 0.0, avoid=(), choose=first) is heavy  # 2/4 < 1/1; full has no room
    assert pick(routes, 0.0, avoid={heavy}, choose=first) is light
    assert pick(routes, 0.0, avoid={heavy, light}, choose=first) is heavy  # tried beats none
    heavy.breaker.trip(0.0)
    assert pick(routes, 5.0, avoid=(), choose=first) is light
    light.breaker.trip(0.0)
    assert pick(routes, 5.0, avoid=(), choose=first) is None
    assert pick([light], 5.0, avoid=(), choose=first) is None
    assert pick([light], 10.0, avoid=(), choose=first) is light


# -- retries and backoff ----------------------------------------------------------------------


async def test_retryable_failures_are_retried_with_backoff() -> None:
    flaky = Scripted(silent_failure(), silent_failure())
    h = Harness(flaky, failures=3)
    assert await answer(h.router) == "hello there"
    assert flaky.opens == 3
    assert h.sleeps.waits == pytest.approx([0.05, 0.1])  # 0.1 and 0.2, jitter factor 0.5
    assert h.routes[0].breaker.failures == 0  # the success closed it


async def test_retry_after_is_honoured_up_to_twice_the_delay() -> None:
    limited = Scripted(error_for_status(429, "slow down", retry_after=7),
                       error_for_status(503, "busy", retry_after=1))
    h = Harness(limited, backoff=1.0, failures=3)
    h.router.rng = Dice(jitter=1.0)  # no jitter: the waits as the policy computes them
    assert await answer(h.router) == "hello there"
    assert h.sleeps.waits == pytest.approx([2.0, 1.0])  # min(7, 2*1), min(1, 2*2)


async def test_a_retry_goes_to_another_deployment() -> None:
    for seed in range(8):  # whichever the tie-break picks first
        first, second = Scripted(bad_gateway()), Scripted(bad_gateway())
        h = Harness(first, second, retries=1, seed=seed)
        with pytest.raises(ServiceUnavailableError):
            await answer(h.router)
        assert (first.opens, second.opens) == (1, 1)
        assert len(h.sleeps.waits) == 1


async def test_a_request_counts_one_failure_per_deployment_however_often_retried() -> None:
    first = Scripted(*(bad_gateway() for _ in range(5)))
    second = Scripted(*(bad_gateway() for _ in range(5)))
    h = Harness(first, second, retries=3, failures=2)
    with pytest.raises(ServiceUnavailableError):
        await answer(h.router)
    assert first.opens + second.opens == 4 and len(h.sleeps.waits) == 3
    assert first.opens >= 1 and second.opens >= 1  # the second attempt went elsewhere
    assert [r.breaker.failures for r in h.routes] == [1, 1]
    assert h.circuits() == [Circuit.CLOSED, Circuit.CLOSED]


async def test_attempts_stop_after_retries_with_a_503_and_retry_after() -> None:
    broken = Scripted(*(bad_gateway() for _ in range(10)))
    h = Harness(broken, retries=2, failures=2, cooldown=30.0)
    with pytest.raises(ServiceUnavailableError) as info:
        await answer(h.router)
    assert broken.opens == 3 and len(h.sleeps.waits) == 2
    assert info.value.code == "no_healthy_deployment" and "bad gateway" in info.value.message
    assert info.value.headers["Retry-After"] == "1"  # the circuit is still closed
    # Three failed attempts were one failed request: the circuit is not open yet.
    assert h.routes[0].breaker.failures == 1 and h.circuits() == [Circuit.CLOSED]
    h.sleeps.waits.clear()
    with pytest.raises(ServiceUnavailableError) as info:
        await answer(h.router)
    # The second failed request opens it: nothing is left to try, so nothing to wait for.
    assert broken.opens == 4 and h.sleeps.waits == []
    assert h.circuits() == [Circuit.OPEN]
    assert info.value.headers["Retry-After"] == "30"  # when the circuit half-opens


async def test_the_request_own_fault_is_answered_at_once() -> None:
    refused, other = Scripted(error_for_status(400, "bad temperature")), Scripted()
    h = Harness(refused, fallbacks=("backup",), resolve=lambda _: other)
    with pytest.raises(UpstreamError) as info:
        await answer(h.router)
    assert info.value.status_code == 400
    assert refused.opens == 1 and other.opens == 0 and h.sleeps.waits == []
    assert h.circuits() == [Circuit.CLOSED] and h.routes[0].breaker.failures == 0


# -- the circuit breaker, through the router ----------------------------------------------------


async def test_an_open_circuit_is_skipped_until_its_cooldown_has_passed() -> None:
    broken, healthy = Scripted(*(bad_gateway() for _ in range(10))), Scripted()
    h = Harness(broken, healthy, failures=2, cooldown=30.0)
    h.routes[1].in_flight = 1  # a request held there: the broken one is the first pick
    for _ in range(8):
        assert await answer(h.router) == "hello there"
    assert broken.opens == 2 and h.circuits() == [Circuit.OPEN, Circuit.CLOSED]
    h.clock.advance(30.0)
    assert h.circuits()[0] is Circuit.HALF_OPEN
    for _ in range(4):  # the half-open one is tried once more, fails, and opens again
        assert await answer(h.router) == "hello there"
    assert broken.opens == 3 and h.circuits() == [Circuit.OPEN, Circuit.CLOSED]
    assert healthy.opens == 12 and h.in_flight() == [0, 1]


async def test_a_half_open_circuit_closes_on_a_success() -> None:
    flaky = Scripted(bad_gateway(), bad_gateway())
    h = Harness(flaky, retries=0, failures=2, cooldown=10.0)
    for _ in range(2):
        with pytest.raises(ServiceUnavailableError):
            await answer(h.router)
    assert h.circuits() == [Circuit.OPEN]
    h.clock.advance(10.0)
    assert await answer(h.router) == "hello there"
    assert h.circuits() == [Circuit.CLOSED] and h.routes[0].breaker.failures == 0


async def test_a_stream_that_breaks_mid_way_counts_against_its_deployment() -> None:
    dying = Scripted(reply="one two three", break_with=transport_error("reset"))
    h = Harness(dying, failures=1)
    stream = await h.router.open(REQUEST)
    async with stream:
        assert (await anext(stream)).content == "one"
        with pytest.raises(UpstreamError):
            await anext(stream)
    assert h.circuits() == [Circuit.OPEN]
    assert dying.opens == 1 and h.sleeps.waits == []  # never retried once it began


async def test_refused_credentials_open_the_circuit_at_once_and_move_on() -> None:
    wrong_key, healthy = Scripted(error_for_status(401, "no")), Scripted()
    h = Harness(wrong_key, healthy, failures=5)
    h.routes[1].in_flight = 1  # a request held there: the wrong key is the first pick
    assert await answer(h.router) == "hello there"
    assert wrong_key.opens == 1 and healthy.opens == 1
    assert h.sleeps.waits == []  # moved on without waiting
    assert h.circuits() == [Circuit.OPEN, Circuit.CLOSED]  # one refusal, not five failures


async def test_refused_credentials_alone_are_a_503_naming_them() -> None:
    wrong_key = Scripted(*(error_for_status(403, "no") for _ in range(3)))
    h = Harness(wrong_key, failures=5, cooldown=30.0)
    with pytest.raises(ServiceUnavailableError) as info:
        await answer(h.router)
    assert "credentials" in info.value.message and info.value.headers["Retry-After"] == "30"
    assert wrong_key.opens == 1 and h.sleeps.waits == []


async def test_a_rate_limit_is_passed_on_when_nothing_is_left() -> None:
    limited = Scripted(*(error_for_status(429, "slow down", retry_after=7) for _ in range(5)))
    h = Harness(limited, retries=2, failures=5)
    with pytest.raises(UpstreamError) as info:
        await answer(h.router)
    assert info.value.status_code == 429 and info.value.headers["Retry-After"] == "7"
    assert limited.opens == 3


# -- fallbacks ---------------------------------------------------------------------------------


async def test_a_model_that_cannot_answer_falls_back_in_order() -> None:
    down = Scripted(*(bad_gateway() for _ in range(10)))
    also_down = Scripted(*(bad_gateway() for _ in range(10)))
    backup = Scripted(reply="from the backup")
    fallbacks = {"also-down": Harness(also_down, retries=0).router, "backup": backup}
    h = Harness(down, retries=1, fallbacks=("also-down", "backup"), resolve=fallbacks.__getitem__)
    assert await answer(h.router) == "from the backup"
    assert (down.opens, also_down.opens, backup.opens) == (2, 1, 1)


async def test_the_last_fallback_error_is_the_answer() -> None:
    down, backup = Scripted(bad_gateway()), Scripted(error_for_status(429, "slow", retry_after=3))
    h = Harness(down, retries=0, fallbacks=("backup",), resolve=lambda _: backup)
    with pytest.raises(UpstreamError) as info:
        await answer(h.router)
    assert info.value.status_code == 429


async def test_a_fallback_that_cannot_honour_the_request_is_skipped() -> None:
    down, picky = Scripted(bad_gateway()), Scripted(refuses_extras=True)
    h = Harness(down, retries=0, fallbacks=("picky",), resolve=lambda _: picky)
    with pytest.raises(ServiceUnavailableError):  # the model's own answer, not the fallback's 400
        await answer(h.router, WITH_EXTRA)
    assert picky.opens == 0


# -- what a request needs is checked once, whatever the pick -------------------------------------


async def test_extras_in_a_model_with_mixed_providers_are_refused_whatever_the_pick() -> None:
    for seed in range(8):
        openai_like, anthropic_like = Scripted(), Scripted(refuses_extras=True)
        h = Harness(openai_like, anthropic_like, seed=seed)
        with pytest.raises(UnsupportedParameterError) as info:
            await answer(h.router, WITH_EXTRA)
        assert info.value.param == "guided_choice"
        assert openai_like.opens == anthropic_like.opens == 0


async def test_extras_are_refused_even_when_the_refusing_deployment_is_broken() -> None:
    # A retry that reached the refusing deployment used to turn a 503 into a 400.
    broken = Scripted(*(bad_gateway() for _ in range(10)))
    h = Harness(broken, Scripted(refuses_extras=True))
    h.routes[1].breaker.trip(h.clock())
    with pytest.raises(UnsupportedParameterError):
        await answer(h.router, WITH_EXTRA)
    assert broken.opens == 0


async def test_capabilities_the_model_lacks_are_refused() -> None:
    h = Harness(Scripted(), capabilities=Capabilities(reasoning=False))
    request = REQUEST.model_copy(update={"reasoning_effort": "high"})
    with pytest.raises(InvalidRequestError) as info:
        await answer(h.router, request)
    assert info.value.param == "reasoning_effort"


# -- balancing ---------------------------------------------------------------------------------


async def test_requests_go_to_the_least_loaded_per_weight_with_room() -> None:
    light, heavy = Scripted(), Scripted()
    h = Harness(light, heavy, weights=(1.0, 2.0), max_in_flight=2, queue_seconds=0)
    streams = [await h.router.open(REQUEST) for _ in range(3)]
    assert h.in_flight() == [1, 2]
    streams.append(await h.router.open(REQUEST))
    assert h.in_flight() == [2, 2]
    with pytest.raises(ServiceUnavailableError) as info:  # no room left anywhere
        await h.router.open(REQUEST)
    assert info.value.code == "model_busy"
    for stream in streams:
        await stream.aclose()
    assert h.in_flight() == [0, 0]
    assert h.circuits() == [Circuit.CLOSED, Circuit.CLOSED]  # full is not failing


# -- busy: waiting for a place ---------------------------------------------------------------


async def test_a_request_past_max_in_flight_waits_and_takes_the_first_place_freed() -> None:
    h = Harness(Scripted(), max_in_flight=1)
    first = await h.router.open(REQUEST)
    waiting = [asyncio.create_task(h.router.open(REQUEST)) for _ in range(2)]
    await settle()
    assert not any(w.done() for w in waiting) and h.in_flight() == [1]
    await first.aclose()  # its place goes to the first that waited, not the second
    await settle()
    assert waiting[0].done() and not waiting[1].done()
    await (await waiting[0]).aclose()
    await (await waiting[1]).aclose()
    assert h.in_flight() == [0] and h.circuits() == [Circuit.CLOSED]


async def test_a_newcomer_queues_behind_those_waiting() -> None:
    # A place given back belongs to the one that waited longest, even when another
    # request arrives before that one has run.
    h = Harness(Scripted(), max_in_flight=1)
    first = await h.router.open(REQUEST)
    waiter = asyncio.create_task(h.router.open(REQUEST))
    await settle()

    async def release_then_arrive() -> DeltaStream:
        await first.aclose()
        return await h.router.open(REQUEST)

    newcomer = asyncio.create_task(release_then_arrive())
    await settle()
    assert waiter.done() and not newcomer.done()
    await (await waiter).aclose()
    await (await newcomer).aclose()
    assert h.in_flight() == [0] and not h.router._waiting and h.router._handed == 0


async def test_a_place_no_waiter_can_use_goes_to_a_newcomer() -> None:
    # The one waiting timed out on the first deployment, which has room now; it waits
    # for the second, and a newcomer does not queue behind it.
    first, second = Scripted(no_status_line()), Scripted()
    h = Harness(first, second, max_in_flight=1)
    held = h.routes[1].lease()  # a request held there: the second is full
    waiter = asyncio.create_task(h.router.open(REQUEST))
    await settle()
    assert first.opens == 1 and not waiter.done() and h.in_flight() == [0, 1]
    newcomer = await asyncio.wait_for(h.router.open(REQUEST), 1)
    assert first.opens == 2 and h.in_flight() == [1, 1] and not waiter.done()
    await newcomer.aclose()
    held.release()  # the second's place given back goes to the one waiting
    await (await asyncio.wait_for(waiter, 1)).aclose()
    assert second.opens == 1
    assert h.in_flight() == [0, 0] and not h.router._waiting and h.router._handed == 0


async def test_a_waiter_that_gives_up_leaks_nothing_and_passes_its_wake_up_on() -> None:
    h = Harness(Scripted(), max_in_flight=1)
    first = await h.router.open(REQUEST)
    leaving = asyncio.create_task(h.router.open(REQUEST))
    staying = asyncio.create_task(h.router.open(REQUEST))
    await settle()
    leaving.cancel()  # its client left while it waited
    with pytest.raises(asyncio.CancelledError):
        await leaving
    await first.aclose()
    stream = await asyncio.wait_for(staying, 1)
    assert h.in_flight() == [1]
    await stream.aclose()
    assert h.in_flight() == [0] and not h.router._waiting and h.router._handed == 0


async def test_a_waiter_cancelled_as_its_turn_came_hands_the_turn_on() -> None:
    h = Harness(Scripted(), max_in_flight=1)
    first = await h.router.open(REQUEST)
    leaving = asyncio.create_task(h.router.open(REQUEST))
    staying = asyncio.create_task(h.router.open(REQUEST))
    await settle()
    await first.aclose()  # the turn is the first waiter's; it is cancelled before it runs
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    stream = await asyncio.wait_for(staying, 1)
    assert h.in_flight() == [1]
    await stream.aclose()
    assert h.in_flight() == [0] and not h.router._waiting and h.router._handed == 0


async def test_room_a_circuit_regained_goes_to_the_next_in_line() -> None:
    h = Harness(Scripted(), Scripted(), max_in_flight=1, cooldown=30.0)
    h.routes[0].breaker.trip(h.clock())
    held = await h.router.open(REQUEST)  # the other one is full now
    waiting = [asyncio.create_task(h.router.open(REQUEST)) for _ in range(2)]
    await settle()
    assert not any(w.done() for w in waiting)
    h.clock.advance(30.0)  # the first half-opens: nothing is given back, nobody is woken
    await held.aclose()  # one place given back, and the one regained: both are taken
    await settle()
    assert all(w.done() for w in waiting) and h.in_flight() == [1, 1]
    for w in waiting:
        await (await w).aclose()
    assert h.in_flight() == [0, 0] and h.router._handed == 0


async def test_busy_retry_after_follows_the_rate_places_were_given_back() -> None:
    h = Harness(Scripted(), max_in_flight=1, queue_seconds=0)
    for _ in range(11):  # one place given back every 2 s of the router's clock
        stream = await h.router.open(REQUEST)
        h.clock.now += 2
        await stream.aclose()
    held = await h.router.open(REQUEST)
    with pytest.raises(ServiceUnavailableError) as info:
        await h.router.open(REQUEST)
    assert info.value.code == "model_busy"
    assert info.value.retry_after == 2  # one ahead of it (itself) at 0.5 places/s
    await held.aclose()


async def test_a_busy_model_falls_back() -> None:
    backup = Scripted(reply="from the backup")
    h = Harness(Scripted(), max_in_flight=1, queue_seconds=0, fallbacks=("backup",),
                resolve=lambda _: backup)
    held = await h.router.open(REQUEST)
    assert await answer(h.router) == "from the backup"
    await held.aclose()
    assert h.in_flight() == [0] and h.circuits() == [Circuit.CLOSED]


# -- timeouts and the deadline -----------------------------------------------------------------


@pytest.mark.parametrize("timeout", [no_status_line, no_first_event])
async def test_a_lone_deployment_that_timed_out_is_not_asked_again(timeout: Any) -> None:
    silent = Scripted(timeout(), timeout(), timeout())
    h = Harness(silent, retries=2, failures=3)
    with pytest.raises(ServiceUnavailableError) as info:
        await answer(h.router)
    assert silent.opens == 1 and h.sleeps.waits == []  # one timeout, not three
    assert info.value.code == "no_healthy_deployment"
    assert "TimeoutError" in info.value.message or "did not answer" in info.value.message
    assert h.routes[0].breaker.failures == 1 and h.in_flight() == [0]


async def test_after_a_timeout_the_retry_goes_to_the_other_deployment() -> None:
    silent, quick = Scripted(no_status_line()), Scripted(reply="from the quick one")
    h = Harness(silent, quick, retries=2)
    h.routes[1].in_flight = 1  # a request held there: the silent one is the first pick
    assert await answer(h.router) == "from the quick one"
    assert (silent.opens, quick.opens) == (1, 1)


async def test_the_deadline_cuts_a_hanging_attempt_and_no_fallback_follows() -> None:
    hanging, backup = Scripted(), Scripted(reply="from the backup")
    hanging.gate = asyncio.Event()  # never set: the upstream never answers
    h = Harness(hanging, failures=1, deadline=0.05, fallbacks=("backup",),
                resolve=lambda _: backup)
    with pytest.raises(UpstreamUnavailable) as info:
        await answer(h.router)
    assert info.value.status_code == 503 and info.value.code == "deadline_exceeded"
    assert "deadline of 0.05 s" in info.value.message
    assert info.value.headers["Retry-After"] == "1"
    assert hanging.opens == 1 and backup.opens == 0 and h.in_flight() == [0]
    assert h.circuits() == [Circuit.OPEN]  # it had the whole deadline: that is failing


async def test_an_attempt_cut_short_after_the_request_waited_is_not_a_failure() -> None:
    hanging = Scripted()
    hanging.gate = asyncio.Event()
    h = Harness(hanging, failures=1, deadline=30.0)
    # The request has spent nearly all of its 30 s (waiting for a place, say).
    token = _deadline.set(asyncio.get_running_loop().time() + 0.02)
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await answer(h.router)
    finally:
        _deadline.reset(token)
    assert info.value.code == "deadline_exceeded" and "deadline of 30 s" in info.value.message
    assert h.circuits() == [Circuit.CLOSED] and h.in_flight() == [0]


async def test_a_circuit_that_closes_again_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    flaky = Scripted(bad_gateway())
    h = Harness(flaky, retries=0, failures=1, cooldown=10.0)
    with caplog.at_level(logging.WARNING, logger="kathan.routing.router"):
        with pytest.raises(ServiceUnavailableError):
            await answer(h.router)
        h.clock.advance(10.0)
        assert await answer(h.router) == "hello there"
        assert await answer(h.router) == "hello there"  # closed already: no second line
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["deployment m#0: circuit open for 10 s after 1 failures",
                     "deployment m#0 answered: circuit closed"]


# -- in flight, however a request ends -----------------------------------------------------------


async def test_in_flight_when_opening_fails() -> None:
    h = Harness(Scripted(bad_gateway(), bad_gateway(), bad_gateway()))
    with pytest.raises(ServiceUnavailableError):
        await h.router.open(REQUEST)
    assert h.in_flight() == [0]


async def test_in_flight_when_the_stream_is_closed_before_iteration() -> None:
    backend = Scripted()
    h = Harness(backend)
    stream = await h.router.open(REQUEST)
    assert h.in_flight() == [1]
    await stream.aclose()
    await stream.aclose()  # a second close changes nothing
    assert h.in_flight() == [0] and backend.closes == 1


async def test_in_flight_when_the_stream_completes() -> None:
    backend = Scripted()
    h = Harness(backend)
    async with await h.router.open(REQUEST) as stream:
        assert [d.content async for d in stream if d.content] == ["hello", "there"]
        assert h.in_flight() == [1]  # until its receiver closes it
    assert h.in_flight() == [0] and backend.closes == 1


async def test_in_flight_when_the_stream_breaks_mid_way() -> None:
    backend = Scripted(reply="a b c", break_with=bad_gateway())
    h = Harness(backend)
    with pytest.raises(UpstreamError):
        await answer(h.router)
    assert h.in_flight() == [0] and backend.closes == 1


async def test_in_flight_when_cancelled_while_opening() -> None:
    backend = Scripted()
    backend.gate = asyncio.Event()
    h = Harness(backend)
    task = asyncio.create_task(h.router.open(REQUEST))
    await backend.entered.wait()
    assert h.in_flight() == [1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.in_flight() == [0] and backend.streams == 0


async def test_in_flight_when_cancelled_during_backoff() -> None:
    backend = Scripted(bad_gateway())
    h = Harness(backend)
    h.sleeps.hold = True
    task = asyncio.create_task(h.router.open(REQUEST))
    await h.sleeps.entered.wait()
    assert h.in_flight() == [0] and backend.opens == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.in_flight() == [0] and backend.opens == 1


# -- probes -----------------------------------------------------------------------------------


async def test_probe_half_opens_the_open_circuits_that_answer() -> None:
    answers, silent, failing, fine = (
        Scripted(), Scripted(answers_probe=False),
        Scripted(answers_probe=ConnectionError("refused")), Scripted(),
    )
    h = Harness(answers, silent, failing, fine, cooldown=30.0)
    for route in h.routes[:3]:
        route.breaker.trip(h.clock())
    assert await h.router.probe()
    assert h.circuits() == [Circuit.HALF_OPEN, Circuit.OPEN, Circuit.OPEN, Circuit.CLOSED]
    assert [b.probes for b in (answers, silent, failing, fine)] == [1, 1, 1, 0]


async def test_probe_says_whether_any_deployment_may_take_requests() -> None:
    silent = Scripted(answers_probe=False)
    h = Harness(silent)
    h.routes[0].breaker.trip(h.clock())
    assert not await h.router.probe()
    silent.answers_probe = True
    assert await h.router.probe()
    assert await answer(h.router) == "hello there"
    assert h.circuits() == [Circuit.CLOSED]


async def test_a_request_the_upstream_may_have_received_goes_nowhere_else() -> None:
    # The connection broke after the request went out: no retry on another deployment,
    # no fallback model, since the upstream may be running it already.
    lost = UpstreamConnectionLost("broke after sending", retryable=False, retry_after=1,
                                  code="upstream_connection_lost")
    first, second, backup = Scripted(lost), Scripted(), Scripted(reply="from the backup")
    h = Harness(first, second, retries=2, fallbacks=("backup",), resolve=lambda _: backup)
    with pytest.raises(UpstreamConnectionLost):
        await answer(h.router)
    assert (first.opens + second.opens, backup.opens) == (1, 0)
    assert h.sleeps.waits == [] and h.in_flight() == [0, 0]
