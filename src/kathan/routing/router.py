"""A configured model's deployments behind one ``Backend``: balancing, retries,
fallback and circuit breaking, composed from small parts.

- **Balance** (``picker.pick``): the deployment with the fewest requests in
  flight per unit of weight, among those whose circuit lets requests through
  and that have room.
- **Retry** (``retry.RetryPolicy``): a connection error, timeout, 429 or 5xx
  before the first byte is retried with exponential backoff, on another
  deployment when there is one. An upstream that rejects Kathan's credentials
  opens its deployment's circuit at once, and the next deployment is tried
  without waiting.
- **Circuit breaker** (``breaker.CircuitBreaker``, one per deployment): failed
  requests in a row open it (retries within one request count once); a probe
  that finds the upstream answering half-opens it.
- **Fall back:** when no deployment can answer, the model's ``fallbacks`` are
  tried in order.
- **Busy is not dead:** a deployment at its ``max_in_flight`` is full, not
  failing. When every deployment with a closed circuit is full, the request
  waits for up to ``queue_seconds``, first come, first served: each place given
  back goes to the longest waiting request, and a request that arrives while
  others wait queues behind them. Then it falls back, then gets a 503
  ``model_busy`` whose ``Retry-After`` comes from the rate at which places were
  given back lately. Being full never counts against a breaker.
- **One deadline:** the time to the first byte, across attempts, backoff,
  waiting for a place and fallbacks, is at most ``deadline`` seconds (a
  fallback model's router keeps the deadline its caller started; once it has
  passed no fallback is tried). An upstream that timed out is not tried again
  within the request: a silent upstream costs one timeout, not one per retry.
  An attempt cut by the deadline counts against its deployment only when it
  had at least half the deadline: one cut short because the request waited
  for a place says nothing about the upstream.

What the request needs is checked once, before any attempt, against the model's
capabilities and every deployment's backend, so the answer does not depend on
which deployment would be picked. Once a response has begun it is never
retried: an upstream that dies mid-stream ends the stream with an error (the
SSE encoder sends an ``error`` event and ``[DONE]``), and counts against its
deployment's breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TypeVar

from kathan.backends.base import Backend, DeltaStream, LoadStats, serves_raw_prompts
from kathan.backends.upstream import UpstreamConnectionLost, UpstreamError, UpstreamUnavailable
from kathan.errors import KathanError, ServiceUnavailableError
from kathan.protocol.chat import ChatCompletionRequest
from kathan.routing.breaker import Circuit
from kathan.routing.capabilities import Capabilities, check_capabilities
from kathan.routing.picker import Route, pick
from kathan.routing.retry import RetryPolicy, Verdict, verdict

logger = logging.getLogger(__name__)

# When the request's time to first byte runs out (the event loop's clock), set by the
# first router a request enters, kept by the routers of its fallback models.
_deadline: ContextVar[float | None] = ContextVar("kathan_routing_deadline", default=None)
# Places given back that the drain rate (``Retry-After`` of a busy model) is judged by.
_RECENT_RELEASES = 256

T = TypeVar("T")


@dataclass
class Router:
    """The ``Backend`` of a configured model: ``routes`` are its deployments,
    ``resolve`` finds a fallback model's backend by name.

    ``clock`` (monotonic seconds), ``sleep`` (the backoff wait) and ``rng`` (the
    tie-break and the jitter) are injected so that tests need no real time.
    """

    model_id: str
    routes: list[Route]
    retry: RetryPolicy
    capabilities: Capabilities = field(default_factory=Capabilities)
    fallbacks: tuple[str, ...] = ()
    resolve: Callable[[str], Backend] | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    deadline: float = 30.0
    queue_seconds: float = 10.0
    # Requests waiting for a place, in order; a future is set when its turn comes.
    _waiting: deque[asyncio.Future[None]] = field(default_factory=deque, init=False)
    # Waiters whose turn came and that have not run yet: the places on their way to them.
    _handed: int = field(default=0, init=False)
    _released: deque[float] = field(
        default_factory=lambda: deque(maxlen=_RECENT_RELEASES), init=False)

    def __post_init__(self) -> None:
        for route in self.routes:
            route.on_release = self._place_freed

    @property
    def ready(self) -> bool:
        return any(r.backend.ready for r in self.routes)

    def stats(self) -> LoadStats | None:
        return None

    def check(self, request: ChatCompletionRequest) -> None:
        """The model's capabilities, then every deployment's own checks."""
        check_capabilities(self.model_id, self.capabilities, request)
        for route in self.routes:
            route.backend.check(request)

    async def probe(self) -> bool:
        """Probe the deployments whose circuit is open (concurrently) and half-open
        those that answer; True when some deployment may take requests now."""
        now = self.clock()
        shut = [r for r in self.routes if not r.breaker.allows(now)]
        answers = await asyncio.gather(*(r.backend.probe() for r in shut),
                                       return_exceptions=True)
        now = self.clock()
        for route, answer in zip(shut, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer  # a cancellation is not an answer
                logger.warning("deployment %s: probe failed: %r", route.deployment.name, answer)
            elif answer and route.breaker.half_open(now):
                logger.info("deployment %s answers again: circuit half-open",
                            route.deployment.name)
        return any(r.breaker.allows(now) for r in self.routes)

    @property
    def serves_raw_prompts(self) -> bool:
        """Legacy completions (``/v1/completions``): when every deployment's backend
        serves them (the local engine continues the prompt, an OpenAI-compatible
        upstream gets the request as sent)."""
        return all(serves_raw_prompts(r.backend) for r in self.routes)

    async def open(self, request: ChatCompletionRequest) -> DeltaStream:
        self.check(request)
        token = None
        if _deadline.get() is None:  # the first router of the request starts the clock
            token = _deadline.set(asyncio.get_running_loop().time() + self.deadline)
        try:
            try:
                return await self._open_here(lambda route: self._attempt(route, request))
            except KathanError as exc:
                if not _model_unavailable(exc):
                    raise  # the request's own fault: another model would refuse it too
                error = exc
            return await self._fall_back(request, error)
        finally:
            if token is not None:
                _deadline.reset(token)

    async def call(
        self, attempt: Callable[[Route], Awaitable[T]], *, routes: Collection[Route]
    ) -> T:
        """``attempt(route)`` for a request whose answer is not a stream (embeddings), on
        the deployments in ``routes`` only (those that can take it): the balancing,
        retries, circuit breakers, waiting for a place and deadline of ``open``. Each
        attempt holds a place in its route's ``in_flight`` while it runs. There are no
        fallbacks: another model's answer (its vectors) is not this model's."""
        token = None
        if _deadline.get() is None:
            token = _deadline.set(asyncio.get_running_loop().time() + self.deadline)
        try:
            others = {r for r in self.routes if r not in routes}
            return await self._open_here(lambda route: self._call(route, attempt), skip=others)
        finally:
            if token is not None:
                _deadline.reset(token)

    async def _open_here(
        self, attempt: Callable[[Route], Awaitable[T]], skip: Collection[Route] = ()
    ) -> T:
        """``attempt`` on the routes but ``skip``, until one answers (see the module)."""
        tried: set[Route] = set()
        failed: set[Route] = set()  # a route counts one failure per request
        # Timed out: not asked again within this request (and those it must not ask).
        silent: set[Route] = set(skip)
        last: UpstreamError | None = None
        waited = 0
        loop = asyncio.get_running_loop()
        deadline = _deadline.get() or loop.time() + self.deadline
        queue_until = min(deadline, loop.time() + self.queue_seconds)
        for _ in range(self.retry.attempts):
            if last is not None and last.retryable:
                if not self._may_answer(silent):
                    break  # nothing left to try: no point waiting
                delay = self.retry.delay(waited, last.retry_after, self.rng.random())
                await self.sleep(min(delay, max(0.0, deadline - loop.time())))
                waited += 1
            if loop.time() >= deadline:
                raise self._late(last)
            route = await self._place(tried, silent, queue_until)
            if route is None:
                break
            began = loop.time()
            tried.add(route)
            try:
                async with asyncio.timeout_at(deadline) as budget:
                    return await attempt(route)
            except TimeoutError:
                if not budget.expired():
                    raise  # not the deadline's (backends turn their own into UpstreamError)
                # The deadline, not the deployment's own timeout: this was the last try.
                if route not in failed and deadline - began >= self.deadline / 2:
                    self._failed(route)
                raise self._late(last) from None
            except UpstreamError as exc:
                last = exc
                if _timed_out(exc):
                    silent.add(route)
                match verdict(exc):
                    case Verdict.FINAL:
                        raise
                    case Verdict.SKIP:
                        route.breaker.trip(self.clock())
                        logger.warning("deployment %s refused Kathan's credentials: "
                                       "circuit open", route.deployment.name)
                    case Verdict.RETRY if route not in failed:
                        failed.add(route)
                        self._failed(route)
        if last is not None and last.status_code == 429:
            raise last  # the client can act on a rate limit and its Retry-After
        reason = f" (last error: {last.message})" if last is not None else ""
        raise ServiceUnavailableError(
            f"No healthy deployment of '{self.model_id}' could answer{reason}.",
            retry_after=self._retry_after(), code="no_healthy_deployment",
        )

    def _next(self, tried: set[Route], silent: Collection[Route] = ()) -> Route | None:
        routes = [r for r in self.routes if r not in silent] if silent else self.routes
        return pick(routes, self.clock(), avoid=tried, choose=self.rng.choice)

    def _may_answer(self, silent: Collection[Route]) -> bool:
        """Some route not timed out in this request has a circuit that lets requests
        through (it may be full: then the request waits for a place)."""
        now = self.clock()
        return any(r.breaker.allows(now) for r in self.routes if r not in silent)

    async def _place(self, tried: set[Route], silent: set[Route],
                     until: float) -> Route | None:
        """The route to try next, on a free place that is not a waiter's already (so a
        newcomer queues behind those waiting); without one, wait in line for a place
        until ``until``. None when no route may answer (circuits open, or timed out in
        this request); ``model_busy`` when the wait ends without a place."""
        turn = False  # its turn came: a place was given back and handed to it
        while True:
            # Nobody waiting or on the way to a place (the usual case): any room is free.
            if turn or not (self._waiting or self._handed) or self._unclaimed() > 0:
                route = self._next(tried, silent)
                if route is not None:
                    return route
            if not self._may_answer(silent):
                return None
            # A turn it could not use (the place is on a route that timed out for it)
            # keeps it first in line; the place is left to a newcomer.
            if not await self._wait_for_place(until, first=turn):
                raise self._busy()
            turn = True

    async def _wait_for_place(self, until: float, *, first: bool) -> bool:
        """Wait in line (at its head when ``first``) until its turn comes (True) or the
        loop's clock reaches ``until``. One that leaves, by giving up or by being
        cancelled (its client left), takes nothing with it: it leaves the line, or,
        when its turn had just come, hands the turn on."""
        waiter = asyncio.get_running_loop().create_future()
        if first:
            self._waiting.appendleft(waiter)
        else:
            self._waiting.append(waiter)
        turn = False
        try:
            async with asyncio.timeout_at(until):
                await waiter
            turn = True
        except TimeoutError:
            pass
        finally:
            if waiter.done() and not waiter.cancelled():  # its turn came
                self._handed -= 1
                if not turn:
                    self._offer()
            else:  # left before its turn (a cancelled task cancels the future it awaits)
                with contextlib.suppress(ValueError):  # a wake-up may have dropped it
                    self._waiting.remove(waiter)
        return turn

    def _place_freed(self) -> None:
        self._released.append(self.clock())
        self._offer()

    def _offer(self) -> None:
        """Hand the next in line its turn when a place is unclaimed: one given back, or,
        after a request took a place, one left over (a circuit that half-opened)."""
        if self._waiting and self._unclaimed() > 0:
            self._wake_one()

    def _unclaimed(self) -> int:
        """Free places (on routes whose circuit lets requests through) that no waiter
        whose turn came is on its way to."""
        now = self.clock()
        free = sum(max(0, r.deployment.max_in_flight - r.in_flight)
                   for r in self.routes if r.breaker.allows(now))
        return free - self._handed

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # not one cancelled since
                waiter.set_result(None)
                self._handed += 1
                return

    def _busy(self) -> ServiceUnavailableError:
        retry_after = self._drain_wait()
        full = ", ".join(f"{r.deployment.name} {r.in_flight}/{r.deployment.max_in_flight}"
                         for r in self.routes)
        return ServiceUnavailableError(
            f"Model '{self.model_id}' is busy: every deployment is at its max_in_flight "
            f"({full}) and none had room within {self.queue_seconds:g} s. Retry after "
            f"{retry_after} s.", retry_after=retry_after, code="model_busy")

    def _drain_wait(self) -> int:
        """Seconds until the requests waiting now, and one more, would have had a place at
        the rate places were given back lately; between 1 and 60."""
        released = self._released
        span = self.clock() - released[0] if len(released) >= 2 else 0.0
        if span <= 0:
            return max(1, min(60, math.ceil(self.queue_seconds)))
        rate = (len(released) - 1) / span
        ahead = len(self._waiting) + 1
        return max(1, min(60, math.ceil(ahead / rate)))

    def _late(self, last: UpstreamError | None) -> UpstreamUnavailable:
        reason = f" (last error: {last.message})" if last is not None else ""
        return UpstreamUnavailable(
            f"No deployment of '{self.model_id}' answered within the request deadline "
            f"of {self.deadline:g} s (routing.deadline_seconds){reason}.",
            retryable=False, retry_after=1, code="deadline_exceeded")

    async def _attempt(self, route: Route, request: ChatCompletionRequest) -> DeltaStream:
        """Open ``route``'s stream, holding a place in its ``in_flight`` until the
        stream is closed (or at once when opening fails or is cancelled)."""
        lease = route.lease()
        self._offer()
        try:
            stream = await route.backend.open(request)
            stream.on_close(lease.release)
        except BaseException:
            lease.release()
            raise
        self._answered(route)
        stream.on_error(lambda exc: self._broke(route, exc))
        return stream

    async def _call(self, route: Route, attempt: Callable[[Route], Awaitable[T]]) -> T:
        """``attempt(route)``, holding a place in the route's ``in_flight`` meanwhile."""
        lease = route.lease()
        self._offer()
        try:
            result = await attempt(route)
        finally:
            lease.release()
        self._answered(route)
        return result

    def _answered(self, route: Route) -> None:
        if route.breaker.state(self.clock()) is not Circuit.CLOSED:
            logger.warning("deployment %s answered: circuit closed", route.deployment.name)
        route.breaker.succeeded()

    def _broke(self, route: Route, exc: BaseException) -> None:
        """A stream that breaks mid-way counts against its deployment's breaker."""
        if isinstance(exc, UpstreamError):
            self._failed(route)

    def _failed(self, route: Route) -> None:
        if route.breaker.failed(self.clock()):
            logger.warning("deployment %s: circuit open for %.0f s after %d failures",
                           route.deployment.name, route.breaker.cooldown,
                           route.breaker.failures)

    def _retry_after(self) -> int:
        """When every circuit is open, the seconds until the first half-opens; else 1."""
        now = self.clock()
        waits = [r.breaker.reopens_in(now) for r in self.routes]
        return max(1, int(min(waits))) if waits and all(waits) else 1

    async def _fall_back(self, request: ChatCompletionRequest, error: KathanError) -> DeltaStream:
        deadline = _deadline.get()
        for name in self.fallbacks:
            if self.resolve is None:
                break
            if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                break  # the request's time is up: the error so far is its answer
            backend = self.resolve(name)
            if request._completion is not None and not serves_raw_prompts(backend):
                continue  # a legacy completion is never answered as a chat
            try:
                backend.check(request)
            except KathanError:
                continue  # a fallback that cannot honour the request is no answer
            logger.warning("model %s: falling back to %s", self.model_id, name)
            try:
                return await backend.open(request)
            except KathanError as exc:
                if not _model_unavailable(exc):
                    raise
                error = exc
        raise error


def _timed_out(error: UpstreamError) -> bool:
    """The upstream was silent past the deployment's timeouts: before its status line
    (``upstream_timeout``), or before its first event (the relay's stream failure,
    raised from the transport's ``TimeoutError``)."""
    return error.code == "upstream_timeout" or isinstance(error.__cause__, TimeoutError)


def _model_unavailable(error: KathanError) -> bool:
    """The model could not answer now (another model might), rather than refusing
    the request itself."""
    if isinstance(error, UpstreamConnectionLost):
        return False  # the upstream may have it: it goes nowhere else
    if isinstance(error, UpstreamError):
        return error.retryable or error.status_code >= 500
    return isinstance(error, ServiceUnavailableError)
