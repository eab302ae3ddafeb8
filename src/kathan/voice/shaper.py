"""The speech shaper: any model's text deltas in, speakable pieces for a TTS engine out.

text deltas → ThinkFilter → FenceFilter → SentenceChunker → per piece: strip_inline →
normalize → whitespace collapsed → dropped when empty.

Because `normalize` and `strip_inline` only ever see whole pieces cut at real boundaries,
patterns split across deltas (`$1,2` + `50.50`, `**bold` + ` text**`, an e-mail address)
are always whole when they are spoken.
"""

from __future__ import annotations

from collections.abc import Callable

from kathan.voice.chunker import Piece, SentenceChunker
from kathan.voice.markup import FenceFilter, ThinkFilter, strip_inline
from kathan.voice.normalize import normalize as normalize_text

__all__ = ["Normalizer", "SpeechShaper", "shape_text"]

Normalizer = Callable[[str, str], str]
"""`normalize(text, locale) -> text`: numbers, currency, dates and the like as words."""


class SpeechShaper:
    """Shapes one stream of text deltas into speakable pieces for one locale.

    `feed` returns the pieces completed by a delta (often none), `flush` the rest at the
    end of the stream. Each piece is plain text, normalized, with whitespace collapsed;
    pieces that held only markup or emoji are dropped. The pieces do not depend on how
    the stream was split into deltas.

    >>> s = SpeechShaper("en-US", normalize=lambda text, locale: text)
    >>> s.feed("<think>plan</think>**Sure!** The total is $1,2") + s.feed("50.50 😀") + s.flush()
    ['Sure!', 'The total is $1,250.50']
    """

    def __init__(
        self,
        locale: str,
        normalize: Normalizer | None = None,
        *,
        first_min_chars: int = 10,
        first_max_words: int = 15,
        min_chars: int = 20,
    ) -> None:
        self.locale = locale
        self._normalize = normalize if normalize is not None else normalize_text
        self._think = ThinkFilter()
        self._fence = FenceFilter()
        self._chunker = SentenceChunker(
            locale,
            first_min_chars=first_min_chars,
            first_max_words=first_max_words,
            min_chars=min_chars,
        )

    def feed(self, text: str) -> list[str]:
        """Add a delta; return the speakable pieces it completed."""
        clean = self._fence.feed(self._think.feed(text))
        return self._shape(self._chunker.feed_pieces(clean) if clean else [])

    def flush(self) -> list[str]:
        """End of stream: return the remaining pieces and reset for a new stream."""
        clean = self._fence.feed(self._think.flush()) + self._fence.flush()
        pieces = self._chunker.feed_pieces(clean) + self._chunker.flush_pieces()
        return self._shape(pieces)

    def _shape(self, pieces: list[Piece]) -> list[str]:
        out: list[str] = []
        for piece in pieces:
            # A piece cut at a line break is a sentence of its own ("## Title").
            text = strip_inline(piece.text + "\n" if piece.line_end else piece.text, self.locale)
            if text:
                text = " ".join(self._normalize(text, self.locale).split())
            if text:
                out.append(text)
        return out


def shape_text(text: str, locale: str, normalize: Normalizer | None = None) -> str:
    """The whole of `text` shaped at once: the pieces joined with spaces.

    >>> shape_text("# Hi\\nI'm **ready** 🚀", "en-US", lambda text, locale: text)
    "Hi. I'm ready"
    """
    shaper = SpeechShaper(locale, normalize)
    return " ".join(shaper.feed(text) + shaper.flush())
