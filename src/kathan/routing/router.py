"""A configured model's deployments behind one ``Backend``: balancing, retries,
fallback and circuit breaking.

- **Balance:** the deployment with the fewest requests in flight per unit of
  weight, among those whose circuit is closed and that have room.
- **Retry:** a connection error, timeout, 429 or 5xx before the first byte is
  retried with exponential backoff, on another deployment when there is one.
  An upstream that rejects Kathan's credentials is skipped at once.
- **Fall back:** when no deployment can answer, the model's ``fallbacks`` are
  tried in order.
- **Circuit breaker:** ``breaker_failures`` failed requests in a row open a
  deployment's circuit for ``breaker_cooldown`` seconds (retries within one
  request count once); a background probe half-opens it early once the
  upstream answers again, and one more failure opens it again.

Once a response has begun it is never retried: an upstream that dies
mid-stream ends the stream with an error (the SSE encoder sends an ``error``
event and ``[DONE]``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp

from kathan.backends.base import Backend, Delta, LoadStats
from kathan.backends.upstream import Deployment, UpstreamError
from kathan.errors import (
    InvalidRequestError,
    KathanError,
    ServiceUnavailableError,
    UnsupportedParameterError,
)
from kathan.protocol.chat import ChatCompletionRequest, ImagePart
from kathan.settings import RoutingSettings

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Route:
    """A deployment with its backend and its live state."""

    deployment: Deployment
    backend: Backend
    in_flight: int = 0
    failures: int = 0
    open_until: float = 0.0  # time.monotonic() until which the circuit is open
    probe_url: str = ""
    probe_headers: dict[str, str] = field(default_factory=dict)

    def closed(self, now: float) -> bool:
        return self.open_until <= now

    def load(self) -> float:
        return self.in_flight / self.deployment.weight


@dataclass(frozen=True, slots=True)
class Capabilities:
    tools: bool = True
    vision: bool = True
    json_schema: bool = True
    reasoning: bool = True


def required_capabilities(request: ChatCompletionRequest) -> list[tuple[str, str]]:
    """(capability, the field that needs it) for what the request uses."""
    needs: list[tuple[str, str]] = []
    for i, message in enumerate(request.messages):
        content = message.content
        if isinstance(content, list) and any(isinstance(p, ImagePart) for p in content):
            needs.append(("vision", f"messages[{i}].content"))
    if request.tools or request.functions:
        needs.append(("tools", "tools" if request.tools else "functions"))
    if request.response_format is not None and request.response_format.type == "json_schema":
        needs.append(("json_schema", "response_format"))
    if request.reasoning_effort is not None and request.reasoning_effort != "none":
        needs.append(("reasoning", "reasoning_effort"))
    return needs


@dataclass
class Router:
    """The ``Backend`` of a configured model.

    >>> router = Router("gpt-4", routes, policy=RoutingSettings())
    >>> deltas = await router.open(request)
    """

    model_id: str
    routes: list[Route]
    policy: RoutingSettings
    capabilities: Capabilities = field(default_factory=Capabilities)
    fallbacks: tuple[str, ...] = ()
    resolve: Callable[[str], Backend] | None = None  # a fallback model's backend
    clock: Callable[[], float] = time.monotonic

    @property
    def ready(self) -> bool:
        return any(r.backend.ready for r in self.routes)

    def stats(self) -> LoadStats | None:
        return None

    async def open(self, request: ChatCompletionRequest) -> AsyncIterator[Delta]:
        self._check_capabilities(request)
        try:
            return await self._open_here(request)
        except UpstreamError as exc:
            if not exc.retryable and exc.status_code < 500:
                raise  # the request's own fault: another model would refuse it too
            last: KathanError = exc
        except ServiceUnavailableError as exc:
            last = exc
        for name in self.fallbacks:
            if self.resolve is None:
                break
            try:
                backend = self.resolve(name)
                logger.warning("model %s: falling back to %s", self.model_id, name)
                return await backend.open(request)
            except (UpstreamError, ServiceUnavailableError) as exc:
                last = exc
        raise last

    def _check_capabilities(self, request: ChatCompletionRequest) -> None:
        for capability, param in required_capabilities(request):
            if not getattr(self.capabilities, capability):
                raise InvalidRequestError(
                    f"Model '{self.model_id}' does not support {capability} "
                    f"(its capabilities do not include it), so '{param}' cannot be honoured.",
                    param=param, code="unsupported_capability",
                )

    def _pick(self, tried: set[int]) -> Route | None:
        now = self.clock()
        if len(self.routes) == 1:  # the common case, without the lists below
            only = self.routes[0]
            if only.closed(now) and only.in_flight < only.deployment.max_in_flight:
                return only
            return None
        usable = [
            r for r in self.routes
            if r.closed(now) and r.in_flight < r.deployment.max_in_flight
        ]
        fresh = [r for r in usable if id(r) not in tried]
        pool = fresh or usable
        if not pool:
            return None
        best = min(r.load() for r in pool)
        return random.choice([r for r in pool if r.load() == best])

    async def _open_here(self, request: ChatCompletionRequest) -> AsyncIterator[Delta]:
        tried: set[int] = set()
        failed: set[int] = set()  # a route counts one failure per request, however often retried
        last: KathanError | None = None
        delay = self.policy.backoff_seconds
        for attempt in range(self.policy.retries + 1):
            route = self._pick(tried)
            if route is None:
                break
            tried.add(id(route))
            if route.deployment.backend in ("anthropic", "gemini") and request.model_extra:
                extra = next(iter(request.model_extra))
                raise UnsupportedParameterError(
                    f"'{extra}' is not a parameter the {route.deployment.backend} backend knows; "
                    "provider extras pass through only to OpenAI-compatible deployments.",
                    param=extra,
                )
            route.in_flight += 1
            try:
                deltas = await route.backend.open(request)
            except UpstreamError as exc:
                route.in_flight -= 1
                last = exc
                if exc.upstream_status in (401, 403):
                    self._failed(route, open_now=True)
                    continue
                if not exc.retryable:
                    raise
                if id(route) not in failed:
                    failed.add(id(route))
                    self._failed(route)
                if attempt < self.policy.retries:
                    wait = delay if exc.retry_after is None else min(exc.retry_after, 2 * delay)
                    await asyncio.sleep(wait * (0.5 + random.random() / 2))
                    delay *= 2
                continue
            except BaseException:
                route.in_flight -= 1
                raise
            self._succeeded(route)
            return self._relay(route, deltas)
        if last is not None and last.status_code == 429:
            raise last
        retry_after = self._retry_after()
        reason = f" (last error: {last.message})" if last is not None else ""
        raise ServiceUnavailableError(
            f"No healthy deployment of '{self.model_id}' could answer{reason}.",
            retry_after=retry_after, code="no_healthy_deployment",
        )

    def _retry_after(self) -> int:
        now = self.clock()
        waits = [r.open_until - now for r in self.routes if not r.closed(now)]
        return max(1, int(min(waits))) if waits and len(waits) == len(self.routes) else 1

    def _failed(self, route: Route, *, open_now: bool = False) -> None:
        route.failures += 1
        if open_now or route.failures >= self.policy.breaker_failures:
            route.open_until = self.clock() + self.policy.breaker_cooldown
            logger.warning("deployment %s: circuit open for %.0f s after %d failures",
                           route.deployment.name, self.policy.breaker_cooldown, route.failures)

    def _succeeded(self, route: Route) -> None:
        route.failures = 0
        route.open_until = 0.0

    async def _relay(self, route: Route, deltas: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        try:
            async for delta in deltas:
                yield delta
        except UpstreamError:
            self._failed(route)
            raise
        finally:
            route.in_flight -= 1
            aclose = getattr(deltas, "aclose", None)
            if aclose is not None:
                await aclose()  # a client that left cancels the upstream request

    async def probe(self, session: aiohttp.ClientSession) -> None:
        """Close the circuits of deployments that answer again (run periodically)."""
        now = self.clock()
        for route in self.routes:
            if route.closed(now) or not route.probe_url:
                continue
            try:
                async with session.get(
                    route.probe_url, headers=route.probe_headers,
                    timeout=aiohttp.ClientTimeout(total=route.deployment.connect_timeout),
                ) as response:
                    healthy = response.status < 500
            except (aiohttp.ClientError, TimeoutError, OSError):
                healthy = False
            if healthy:
                # Half-open: traffic may try it again, and one more failure re-opens it.
                logger.info("deployment %s answers again: circuit half-open",
                            route.deployment.name)
                route.failures = max(0, self.policy.breaker_failures - 1)
                route.open_until = 0.0
