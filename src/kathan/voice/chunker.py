"""Cut a stream of text deltas into speakable pieces at sentence boundaries.

The cut is made on the raw text (after the block filters of `kathan.voice.markup`, before
`normalize`), so a number, an e-mail address or a `**bold phrase**` split across deltas is
always whole inside one piece. Every decision looks at a bounded amount of following text
and waits for it when it has not arrived yet, which makes the pieces independent of where
the stream was split.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["Piece", "SentenceChunker", "abbreviations"]

_TERMINATORS = ".?!…।॥"
# After a terminator: closing quotes, brackets and emphasis markers belong to the sentence.
_CLOSERS = "\"'”’»)]}*_~`"
# Before the next sentence's first letter: opening quotes, brackets and markers.
_OPENERS = "\"'“‘«([{¿¡*_~`"

# Candidates: sentence terminators and line breaks; for the first piece also clause
# punctuation and word gaps (for the early cut).
_LATER = re.compile(r"[.?!…।॥]+|\n")
_FIRST = re.compile(r"[.?!…।॥]+|[,;:—–]|\s+")

# Letters, with Devanagari vowel signs and joiners (which `str.isalpha` rejects), and
# inner apostrophes or hyphens: "don't", "well-known", "हिंदी".
_MARKS = r"\u0300-\u036f\u0900-\u0903\u093a-\u094f\u0951-\u0957\u0962\u0963\u200c\u200d"
_LETTER = rf"(?:[^\W\d_]|[{_MARKS}])"
_PLAIN_WORD = re.compile(rf"{_LETTER}+(?:['’-]{_LETTER}+)*")
_INITIALS = re.compile(r"(?:[^\W\d_]\.){2,}")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Abbreviations, lower case with their dot. ALWAYS never end a sentence; NUMBER only
# protect a following number ("No. 5" but "No. I don't"); FINAL end a sentence when the
# next word starts with a capital ("… etc. Then"). A `.` before a lower-case word never
# ends a sentence, whatever the word before it, so those lists only matter before capitals
# and digits.
_ALWAYS: dict[str, frozenset[str]] = {
    "en": _words(
        "mr. mrs. ms. mx. dr. prof. st. sr. sgt. capt. lt. col. gen. gov. rev. hon. mt. "
        "vs. e.g. i.e. approx. dept. cf. viz. smt. shri. sh. kum. govt."
    ),
    "es": _words(
        "sr. sra. srta. sres. srs. dr. dra. ud. uds. lic. ing. prof. profa. av. avda. "
        "gral. aprox. ej. vs. dña. d. dn."
    ),
    "fr": _words("mme. mmes. mlle. mlles. mm. dr. pr. me. st. ste. cf. env. av. bd. ex."),
    "hi": _words("डॉ. प्रो. श्री. सं. कु. स्व."),
}
_NUMBER: dict[str, frozenset[str]] = {
    "en": _words(
        "no. nos. nr. vol. p. pp. fig. ch. sec. art. tel. rs. op. "
        "jan. feb. mar. apr. jun. jul. aug. sep. sept. oct. nov. dec."
    ),
    "es": _words("núm. nº. pág. págs. cap. ene. abr. ago. dic."),
    "fr": _words("n. tél. chap. janv. févr. avr. juil. déc."),
    "hi": _words("रु. क्र."),
}
_FINAL: dict[str, frozenset[str]] = {
    "en": _words("etc. a.m. p.m. inc. ltd. co. corp. jr. al."),
    "es": _words("cía. hnos. s.a."),
    "fr": _words("cie."),
    "hi": frozenset(),
}


def abbreviations(locale: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(always, before-a-number, final-before-a-capital) abbreviations for a locale.

    Every language also gets the English lists: replies in Hindi, Spanish or French quote
    English titles and units often enough, and the English entries do not clash.
    """
    lang = locale.split("-")[0].lower()
    lists = []
    for table in (_ALWAYS, _NUMBER, _FINAL):
        lists.append(table["en"] | table.get(lang, frozenset()))
    return lists[0], lists[1], lists[2]


class Piece(NamedTuple):
    """A cut piece: stripped `text`, and whether the cut fell on a line break."""

    text: str
    line_end: bool


_WAIT = -1  # the candidate needs text that has not arrived yet
_NO = -2  # not a boundary


class SentenceChunker:
    """Turns one stream's text deltas into complete pieces for the TTS engine.

    Boundaries: a run of `. ? ! … । ॥` (closing quotes/brackets included) followed by
    whitespace, or a line break. A `.` is not a boundary after an abbreviation of the
    locale's language, after initials (`J. K.`, `U.S.`), after an ordered-list number at
    a line start, or when the next word starts in lower case; an ellipsis before a
    lower-case word is not one either. The first piece is also cut at a clause break
    (`, ; : —` or ` – `, then whitespace and a letter) once it has `first_min_chars`,
    and, if no break came, after `first_max_words` words between two plain words. Later
    pieces are whole sentences of at least `min_chars`; shorter ones are merged with the
    next. `flush` returns the rest. Pieces are stripped slices of the input (interior
    line breaks kept for `strip_inline`), so their words, in order, are exactly the input's.

    >>> c = SentenceChunker("en-US")
    >>> c.feed("Hi there! Ok. Dr. Smith paid $1,2") + c.feed("50.50 today. Bye.") + c.flush()
    ['Hi there!', 'Ok. Dr. Smith paid $1,250.50 today.', 'Bye.']
    """

    def __init__(
        self,
        locale: str = "en-US",
        *,
        first_min_chars: int = 10,
        first_max_words: int = 15,
        min_chars: int = 20,
    ) -> None:
        self.locale = locale
        self.first_min_chars = first_min_chars
        self.first_max_words = first_max_words
        self.min_chars = min_chars
        self._always, self._number, self._final = abbreviations(locale)
        # Titles written without a dot ("Mr Smith", en-GB) must not end a forced cut.
        self._bare = frozenset(a[:-1] for a in self._always if a.count(".") == 1)
        self._buf = ""  # text from the start of the current piece
        self._scan = 0  # first position in _buf not yet decided
        self._prev = "\n"  # the character just before _buf (line-start checks)
        self._first = True  # no speakable piece emitted yet
        self._enough_words = False  # the first piece has first_max_words words

    def feed(self, text: str) -> list[str]:
        """Add a delta; return the pieces completed by it (maybe none)."""
        return [p.text for p in self.feed_pieces(text)]

    def flush(self) -> list[str]:
        """End of stream: return the remaining pieces and reset for a new stream."""
        return [p.text for p in self.flush_pieces()]

    def feed_pieces(self, text: str) -> list[Piece]:
        """`feed`, with each piece telling whether it was cut at a line break."""
        self._buf += text
        return self._cut(final=False)

    def flush_pieces(self) -> list[Piece]:
        """`flush`, with each piece telling whether it was cut at a line break."""
        out = self._cut(final=True)
        rest = self._buf
        text = rest.strip()
        if text:
            out.append(Piece(text, "\n" in rest[len(rest.rstrip()) :]))
        self._buf, self._scan, self._prev = "", 0, "\n"
        self._first, self._enough_words = True, False
        return out

    # -- scanning ------------------------------------------------------------------------

    def _cut(self, final: bool) -> list[Piece]:
        out: list[Piece] = []
        pos = self._scan
        while True:
            buf = self._buf
            m = (_FIRST if self._first else _LATER).search(buf, pos)
            if m is None:
                pos = len(buf)
                break
            cut, line_end = self._decide(buf, m, final)
            if cut == _WAIT:
                pos = m.start()
                break
            if cut == _NO:
                pos = m.end()
                continue
            text = buf[:cut].strip()
            if not text or (not self._first and len(text) < self.min_chars):
                pos = m.end()  # nothing yet, or too short: merge with the next sentence
                continue
            out.append(Piece(text, line_end))
            if self._first and any(ch.isalnum() for ch in text):
                self._first = False  # a piece of only emoji or rules is not "first"
            self._prev = buf[cut - 1]
            self._buf = buf[cut:]
            self._enough_words = False
            pos = 0
        self._scan = pos
        return out

    def _decide(self, buf: str, m: re.Match[str], final: bool) -> tuple[int, bool]:
        """Where candidate `m` cuts the piece (`(end, line_end)`), or `_NO` / `_WAIT`."""
        ch = m.group()[0]
        if ch in _TERMINATORS:
            return self._sentence_end(buf, m, final)
        if ch == "\n" and not self._first:
            return m.start(), True
        if ch.isspace():
            return self._word_gap(buf, m, final)
        return self._clause_break(buf, m.start(), final), False

    def _sentence_end(self, buf: str, m: re.Match[str], final: bool) -> tuple[int, bool]:
        n = len(buf)
        j = m.end()
        while True:
            while j < n and buf[j] in _CLOSERS:
                j += 1
            # French sets the closing guillemet off with a (narrow) space: « Oui. » Puis…
            if j + 1 < n and buf[j] in " \u00a0\u202f" and buf[j + 1] == "»":
                j += 2
                continue
            break
        if j == n:
            return (j, False) if final else (_WAIT, False)
        if not buf[j].isspace():
            return _NO, False  # 3.5, example.com, "?)x"
        k = j
        while k < n and buf[k].isspace():
            k += 1
        if "\n" in buf[j:k]:
            return j, True
        if k == n:
            return (j, False) if final else (_WAIT, False)
        q = k
        while q < n and buf[q] in _OPENERS:
            q += 1
        if q == n:
            return (j, False) if final else (_WAIT, False)
        return (j, False) if self._ends(buf, m, buf[q]) else (_NO, False)

    def _ends(self, buf: str, m: re.Match[str], nxt: str) -> bool:
        """Whether the terminator run `m`, followed by a space and `nxt`, ends a sentence."""
        run = m.group()
        if any(c in run for c in "?!।॥"):
            return True
        if run != ".":  # an ellipsis: "Well... maybe" goes on, "Wait... What?" does not
            return not nxt.islower()
        if nxt.islower():
            return False
        start = m.start()
        ts = start
        while ts > 0 and not buf[ts - 1].isspace():
            ts -= 1
        token = buf[ts : start + 1].lstrip(_OPENERS)
        low = token.lower()
        if low in self._always:
            return False
        if low in self._number:
            return not nxt.isdigit()
        if low in self._final:
            return nxt.isupper()
        if (len(token) == 2 and token[0].isupper()) or _INITIALS.fullmatch(token):
            return False  # J. K. Rowling, U.S. Army
        # "1. Preheat the oven" (or "- **1. Preheat**") is a list item, not a sentence.
        number = token.lstrip("*_")
        return not (number[:-1].isdigit() and len(number) <= 4 and self._at_line_start(buf, ts))

    def _at_line_start(self, buf: str, i: int) -> bool:
        """Whether only blanks, or a list bullet, stand before ``i`` on its line."""
        while i > 0 and buf[i - 1] in " \t":
            i -= 1
        if i > 0 and buf[i - 1] in "-*+•" and buf[i] in " \t":
            i -= 1
            while i > 0 and buf[i - 1] in " \t":
                i -= 1
        return (buf[i - 1] if i else self._prev) == "\n"

    def _clause_break(self, buf: str, i: int, final: bool) -> int:
        """First piece only: cut after `,` `;` `:` `—` or ` – ` before a word."""
        n = len(buf)
        if buf[i] == "–" and not (i and buf[i - 1].isspace()):
            return _NO
        e = i + 1
        k = e
        while k < n and buf[k] in " \t":
            k += 1
        if k == n:
            return _NO if final else _WAIT
        if k == e or not buf[k].isalpha():
            return _NO  # 1,250 / 3:30 / "March 15, 2024" / a line break (cut there)
        return e if len(buf[:e].strip()) >= self.first_min_chars else _NO

    def _word_gap(self, buf: str, m: re.Match[str], final: bool) -> tuple[int, bool]:
        """First piece only: a line break, or the forced cut after enough words."""
        s, e, n = m.start(), m.end(), len(buf)
        if e == n and not final:
            return _WAIT, False
        if "\n" in m.group():
            return s, True
        if e == n:
            return _NO, False
        if not self._enough_words:  # counted once per piece: the count only grows
            if len(buf[:s].split()) < self.first_max_words:
                return _NO, False
            self._enough_words = True
        ne = e
        while ne < n and not buf[ne].isspace():
            ne += 1
        if ne == n and not final:
            return _WAIT, False
        ps = s
        while ps > 0 and not buf[ps - 1].isspace():
            ps -= 1
        prev, nxt = buf[ps:s], buf[e:ne]
        plain = _PLAIN_WORD.fullmatch(prev) and _PLAIN_WORD.fullmatch(nxt)
        return (s, False) if plain and prev.lower() not in self._bare else (_NO, False)
