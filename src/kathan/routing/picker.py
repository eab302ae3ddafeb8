"""A model's deployments as routes, and the choice of the one to try next."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from kathan.backends.base import Backend
from kathan.backends.upstream import Deployment
from kathan.routing.breaker import CircuitBreaker


@dataclass(eq=False)
class Route:
    """A deployment, its backend, its circuit breaker and its requests in flight."""

    deployment: Deployment
    backend: Backend
    breaker: CircuitBreaker
    in_flight: int = 0
    # Called each time a place is given back (the router wakes a request waiting for one).
    on_release: Callable[[], None] | None = None

    def usable(self, now: float) -> bool:
        """Its circuit lets requests through and it has room for one more."""
        return self.breaker.allows(now) and self.in_flight < self.deployment.max_in_flight

    def load(self) -> float:
        return self.in_flight / self.deployment.weight

    def lease(self) -> Lease:
        """Take one place in ``in_flight`` until the lease is released."""
        return Lease(self)


class Lease:
    """One request's place in a route's ``in_flight`` count; releasing it more than
    once gives the place back once."""

    __slots__ = ("_route",)

    def __init__(self, route: Route) -> None:
        route.in_flight += 1
        self._route: Route | None = route

    def release(self) -> None:
        route = self._route
        if route is not None:
            route.in_flight -= 1
            self._route = None
            if route.on_release is not None:
                route.on_release()


Choose = Callable[[Sequence[Route]], Route]


def pick(
    routes: Sequence[Route], now: float, *, avoid: Collection[Route], choose: Choose
) -> Route | None:
    """The usable route with the fewest requests in flight per unit of weight,
    preferring routes not in ``avoid`` (those this request tried already); ties
    are broken by ``choose`` (a random choice). None when no route is usable."""
    if len(routes) == 1:  # the common case, without the lists below
        only = routes[0]
        return only if only.usable(now) else None
    usable = [r for r in routes if r.usable(now)]
    pool = [r for r in usable if r not in avoid] or usable
    if not pool:
        return None
    best = min(r.load() for r in pool)
    return choose([r for r in pool if r.load() == best])
