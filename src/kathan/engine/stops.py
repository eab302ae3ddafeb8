"""Incremental stop-string matching over streamed text.

A stop string may arrive split across several tokens. The matcher holds back
any tail of the text that could still grow into a stop string, so no part of
a stop string is ever emitted.
"""

from __future__ import annotations

from collections.abc import Iterable


class StopMatcher:
    """Feed text as it is generated; get back what is safe to emit.

    >>> m = StopMatcher(["END"])
    >>> m.feed("hello E")
    ('hello ', False)
    >>> m.feed("ND more")
    ('', True)
    """

    __slots__ = ("_firsts", "_held", "_longest", "_stops", "matched")

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self._longest = max((len(s) for s in self._stops), default=0)
        # Every request carries the template's markup as stops: most text holds
        # none of their first characters, and is passed without comparing tails.
        self._firsts = frozenset(s[0] for s in self._stops)
        self.matched: str | None = None  # the stop string that ended the text, once one did

    def feed(self, text: str) -> tuple[str, bool]:
        """Return ``(safe_text, stopped)``. After ``stopped``, discard the matcher."""
        if not self._stops:
            return text, False
        buf = self._held + text
        cut = -1
        for stop in self._stops:
            at = buf.find(stop)
            if at != -1 and (cut == -1 or at < cut):
                cut, self.matched = at, stop
        if cut != -1:
            self._held = ""
            return buf[:cut], True
        keep = self._partial_tail(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """The held-back text, once generation ends without a stop."""
        held, self._held = self._held, ""
        return held

    def _partial_tail(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a stop."""
        firsts = self._firsts
        for k in range(min(self._longest - 1, len(buf)), 0, -1):
            if buf[-k] not in firsts:
                continue
            tail = buf[-k:]
            if any(stop.startswith(tail) for stop in self._stops):
                return k
        return 0
