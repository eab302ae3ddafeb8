"""``LoginThrottle``: failed logins, counted per email and per client address.

After ``failures`` failed logins for one email within ``window`` seconds (or four
times as many from one client address, which many people may share), further
attempts are refused for ``lockout`` seconds: a 429 with ``Retry-After``, before
any password is hashed, so a guesser costs the server nothing. Before that, each failed
login is answered more slowly (``slowdown``: ``delay`` seconds per failure counted). A successful login
clears its email's count. Counts live in this process (each replica counts its
own), and entries are forgotten once their window has passed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kathan.errors import RateLimitError

ADDRESS_FACTOR = 4
MAX_DELAY = 4.0


@dataclass(slots=True)
class _Count:
    failures: list[float] = field(default_factory=list)  # times, oldest first
    locked_until: float = 0.0


class LoginThrottle:
    def __init__(
        self,
        *,
        failures: int,
        lockout: float,
        window: float | None = None,
        delay: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.lockout = lockout
        self.window = window if window is not None else max(lockout, 900.0)
        self.delay = delay
        self._clock = clock
        self._counts: dict[str, _Count] = {}

    def check(self, email: str, client: str) -> None:
        """Raise ``RateLimitError`` while either the email or the address is locked out."""
        now = self._clock()
        waits = [c.locked_until - now for c in (self._counts.get(f"email:{email}"),
                                                 self._counts.get(f"address:{client}"))
                 if c is not None and c.locked_until > now]
        if waits:
            raise RateLimitError(
                "Too many failed logins for this account or from this address; "
                "try again later.", limit="login", retry_after=math.ceil(max(waits)))

    def failed(self, email: str, client: str) -> None:
        now = self._clock()
        self._prune(now)
        for name, most in ((f"email:{email}", self.failures),
                           (f"address:{client}", self.failures * ADDRESS_FACTOR)):
            count = self._counts.setdefault(name, _Count())
            count.failures = [t for t in count.failures if t > now - self.window]
            count.failures.append(now)
            if len(count.failures) >= most:
                count.locked_until = now + self.lockout
                count.failures.clear()

    def slowdown(self, email: str, client: str) -> float:
        """How long a failed login waits before it is answered: ``delay`` for each failure
        of its email or address still counted (this one included), at most ``MAX_DELAY``.
        Guessing is slowed before it is refused."""
        counted = max((len(c.failures) for c in (self._counts.get(f"email:{email}"),
                                                   self._counts.get(f"address:{client}"))
                       if c is not None), default=0)
        return min(self.delay * max(counted, 1), MAX_DELAY)

    def succeeded(self, email: str) -> None:
        self._counts.pop(f"email:{email}", None)

    def _prune(self, now: float) -> None:
        if len(self._counts) < 10_000:
            return
        stale = [name for name, c in self._counts.items()
                 if c.locked_until <= now and (not c.failures or c.failures[-1] <= now - self.window)]
        for name in stale:
            del self._counts[name]
