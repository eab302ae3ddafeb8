"""``Outage``: one line in the log when a dependency stops answering, one when it is back.

A limiter or a store that is down fails every request or every flush that needs it.
A line per failure would bury the log, and no line at all (the 503s alone) leaves an
operator guessing. Each dependency keeps one ``Outage``: its first failure logs a
warning saying what fails and what that means for requests, and the first success
after that logs how long it lasted and how many calls failed.
"""

from __future__ import annotations

import logging
import time


class Outage:
    """The degraded state of ``what``; ``meaning`` says what clients see meanwhile."""

    __slots__ = ("_logger", "failures", "meaning", "since", "what")

    def __init__(self, what: str, meaning: str, logger: logging.Logger) -> None:
        self.what = what
        self.meaning = meaning
        self._logger = logger
        self.since: float | None = None  # monotonic time of the first failure
        self.failures = 0

    def failed(self, error: BaseException) -> None:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            self._logger.warning("%s unreachable (%s: %s). %s", self.what,
                                 type(error).__name__, error, self.meaning)

    def succeeded(self) -> None:
        if self.since is not None:
            self._logger.warning("%s reachable again after %.1f s (%d failed calls)",
                                 self.what, time.monotonic() - self.since, self.failures)
            self.since = None
            self.failures = 0
