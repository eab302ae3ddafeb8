"""One choice's sampled token pieces (bytes) as the text it may send.

A token's piece may end inside a multi-byte UTF-8 character, and a stop
string may span several tokens, so both the bytes of an unfinished character
and the tail that could still grow into a stop are held back until the next
piece settles them.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable

from kathan.engine.stops import StopMatcher


class Detokenizer:
    """Feed each sampled token's bytes; get the text that is safe to send.

    >>> d = Detokenizer(["END"])
    >>> d.feed("café E".encode()[:4])  # the piece ends inside "é"
    ('caf', False)
    >>> d.feed("café E".encode()[4:])
    ('é ', False)
    >>> d.feed(b"ND")
    ('', True)

    When generation ends without a stop (the model's end token, or
    ``max_tokens``), ``end()`` gives the text still held back. The bytes of
    a character the model never finished are dropped there, not replaced
    with U+FFFD: the cut fell inside the character, which was never written.

    >>> d = Detokenizer([])
    >>> d.feed(b"\\xe2\\x82")  # the first two of the three bytes of "€"
    ('', False)
    >>> d.end()
    ''
    """

    __slots__ = ("_decoder", "_stops")

    def __init__(self, stops: Iterable[str]) -> None:
        # Bytes that can never be UTF-8 are replaced as they come; only an
        # unfinished character at the very end is dropped (``end``).
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = StopMatcher(stops)

    def feed(self, piece: bytes) -> tuple[str, bool]:
        """``(text, stopped)``: after ``stopped`` the choice is over, and ``text`` is its last."""
        return self._stops.feed(self._decoder.decode(piece))

    @property
    def stopped_by(self) -> str | None:
        """The stop string that ended the choice (after ``feed`` said ``stopped``)."""
        return self._stops.matched

    def end(self) -> str:
        """Generation ended without a stop: the text held back, less any unfinished character."""
        self._decoder.reset()
        return self._stops.flush()
