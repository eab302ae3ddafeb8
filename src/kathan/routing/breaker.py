"""A deployment's circuit breaker: whether requests may go to it right now.

- **Closed:** requests go through; ``failures`` failed requests in a row open it.
- **Open:** requests are kept away for ``cooldown`` seconds.
- **Half-open:** the cooldown has passed, or a probe found the upstream
  answering again. Requests go through; the first success closes the circuit,
  and one failure opens it again for another cooldown.

The breaker keeps no clock of its own: every method that depends on time takes
``now`` (the router's clock), so a test drives it with plain numbers.
"""

from __future__ import annotations

import enum


class Circuit(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """The state of one deployment's circuit, and the failures that move it.

    Used by the router as: ``allows(now)`` before picking the deployment,
    ``succeeded()`` once it answered, ``failed(now)`` once per failed request (its
    answer says whether the circuit opened), ``trip(now)`` when the upstream
    refuses Kathan's credentials, and ``half_open(now)`` when a probe of an open
    circuit finds the upstream answering.
    """

    __slots__ = ("_failures", "_open_until", "_state", "cooldown", "threshold")

    def __init__(self, failures: int, cooldown: float) -> None:
        if failures < 1:
            raise ValueError("a breaker opens after at least one failure")
        self.threshold = failures
        self.cooldown = cooldown
        self._state = Circuit.CLOSED
        self._failures = 0  # failures in a row
        self._open_until = 0.0

    @property
    def failures(self) -> int:
        return self._failures

    def state(self, now: float) -> Circuit:
        if self._state is Circuit.OPEN and now >= self._open_until:
            return Circuit.HALF_OPEN
        return self._state

    def allows(self, now: float) -> bool:
        return self.state(now) is not Circuit.OPEN

    def reopens_in(self, now: float) -> float:
        """Seconds until an open circuit half-opens by itself (0 when it is not open)."""
        return max(0.0, self._open_until - now) if self.state(now) is Circuit.OPEN else 0.0

    def succeeded(self) -> None:
        self._state = Circuit.CLOSED
        self._failures = 0

    def failed(self, now: float) -> bool:
        """Count one failure; True when it opened the circuit."""
        self._failures += 1
        if self.state(now) is Circuit.HALF_OPEN or self._failures >= self.threshold:
            self._open(now)
            return True
        return False

    def trip(self, now: float) -> None:
        """Open the circuit at once, whatever the count (the upstream refused Kathan)."""
        self._failures += 1
        self._open(now)

    def half_open(self, now: float) -> bool:
        """Let requests try an open circuit again; True when it was open."""
        if self.state(now) is not Circuit.OPEN:
            return False
        self._state = Circuit.HALF_OPEN
        return True

    def _open(self, now: float) -> None:
        self._state = Circuit.OPEN
        self._open_until = now + self.cooldown
