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

What the request needs is checked once, before any attempt, against the model's
capabilities and every deployment's backend, so the answer does not depend on
which deployment would be picked. Once a response has begun it is never
retried: an upstream that dies mid-stream ends the stream with an error (the
SSE encoder sends an ``error`` event and ``[DONE]``), and counts against its
deployment's breaker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kathan.backends.base import Backend, DeltaStream, LoadStats
from kathan.backends.upstream import UpstreamConnectionLost, UpstreamError
from kathan.errors import KathanError, ServiceUnavailableError
from kathan.protocol.chat import ChatCompletionRequest
from kathan.routing.capabilities import Capabilities, check_capabilities
from kathan.routing.picker import Route, pick
from kathan.routing.retry import RetryPolicy, Verdict, verdict

logger = logging.getLogger(__name__)


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

    async def open(self, request: ChatCompletionRequest) -> DeltaStream:
        self.check(request)
        try:
            return await self._open_here(request)
        except KathanError as exc:
            if not _model_unavailable(exc):
                raise  # the request's own fault: another model would refuse it too
            error = exc
        return await self._fall_back(request, error)

    async def _open_here(self, request: ChatCompletionRequest) -> DeltaStream:
        tried: set[Route] = set()
        failed: set[Route] = set()  # a route counts one failure per request
        last: UpstreamError | None = None
        waited = 0
        for _ in range(self.retry.attempts):
            if last is not None and last.retryable:
                if self._next(tried) is None:
                    break  # nothing left to try: no point waiting
                await self.sleep(self.retry.delay(waited, last.retry_after, self.rng.random()))
                waited += 1
            route = self._next(tried)
            if route is None:
                break
            tried.add(route)
            try:
                return await self._attempt(route, request)
            except UpstreamError as exc:
                last = exc
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

    def _next(self, tried: set[Route]) -> Route | None:
        return pick(self.routes, self.clock(), avoid=tried, choose=self.rng.choice)

    async def _attempt(self, route: Route, request: ChatCompletionRequest) -> DeltaStream:
        """Open ``route``'s stream, holding a place in its ``in_flight`` until the
        stream is closed (or at once when opening fails or is cancelled)."""
        lease = route.lease()
        try:
            stream = await route.backend.open(request)
            stream.on_close(lease.release)
        except BaseException:
            lease.release()
            raise
        route.breaker.succeeded()
        stream.on_error(lambda exc: self._broke(route, exc))
        return stream

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
        for name in self.fallbacks:
            if self.resolve is None:
                break
            backend = self.resolve(name)
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


def _model_unavailable(error: KathanError) -> bool:
    """The model could not answer now (another model might), rather than refusing
    the request itself."""
    if isinstance(error, UpstreamConnectionLost):
        return False  # the upstream may have it: it goes nowhere else
    if isinstance(error, UpstreamError):
        return error.retryable or error.status_code >= 500
    return isinstance(error, ServiceUnavailableError)
